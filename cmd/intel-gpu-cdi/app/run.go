package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit statuses of Main.
const (
	ExitOK = 0
	// ExitFailure: the command line was understood and the command failed:
	// a bad flag value, a root that is not a node, an output it may not
	// replace, a write that failed.
	ExitFailure = 1
	// ExitUsage: the command line itself is wrong: an unknown command or
	// flag, a flag without its value or with one not of its type, an
	// unexpected argument. Nothing was read or written.
	ExitUsage = 2
)

// UsageError is a command line the app cannot parse.
type UsageError struct {
	// Command is the full command name, "intel-gpu-cdi generate".
	Command string
	Err     error
}

func (e *UsageError) Error() string { return e.Command + ": " + e.Err.Error() }

func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(c *cli.Context, format string, args ...any) error {
	return &UsageError{Command: commandName(c), Err: fmt.Errorf(format, args...)}
}

func commandName(c *cli.Context) string {
	if c.Command != nil && c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return c.App.Name
}

// onUsageError returns urfave/cli's parse errors instead of printing the
// help on stdout: a usage error must not end up in a file that the
// standard output was redirected to.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return &UsageError{Command: commandName(c), Err: errors.New(flagErrorText(err.Error()))}
}

// flagErrorText spells the flag package's errors the way flags are typed
// here: --output, not -output.
func flagErrorText(s string) string {
	for _, prefix := range []string{"flag provided but not defined: -", "flag needs an argument: -"} {
		if name, ok := strings.CutPrefix(s, prefix); ok {
			dashes := "--"
			if len(name) == 1 {
				dashes = "-"
			}
			if strings.HasPrefix(prefix, "flag provided") {
				return "unknown flag " + dashes + name
			}
			return "flag " + dashes + name + " needs a value"
		}
	}
	// invalid value "two" for flag -shared-dev-num: ...
	// invalid boolean value "maybe" for -verbose: ...
	if strings.HasPrefix(s, "invalid ") {
		for _, sep := range []string{" for flag -", " for -"} {
			if before, after, ok := strings.Cut(s, sep); ok && len(after) > 1 && after[0] != '-' && after[1] != ':' {
				return before + sep + "-" + after
			}
		}
	}
	return s
}

// Main runs the command line args (args[0] is the program) and returns
// the process exit status: ExitOK, ExitFailure or ExitUsage. A usage
// error is written to stderr with a hint where to read the usage, and
// nothing to stdout.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, extra ...*cli.Command) int {
	return Run(ctx, New(extra...), args, stdout, stderr)
}

// Run runs a (an app that follows Conventions) as Main does.
func Run(ctx context.Context, a *cli.App, args []string, stdout, stderr io.Writer) int {
	a.Writer, a.ErrWriter = stdout, stderr
	err := a.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	var (
		usage *UsageError
		exit  cli.ExitCoder
	)
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s\nRun '%s --help' for usage.\n", usage, usage.Command)
		return ExitUsage
	case errors.As(err, &exit):
		// urfave/cli's own: `help <unknown topic>`.
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", a.Name, err, a.Name)
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", a.Name, err)
	return ExitFailure
}
