package deploy_test

import (
	"flag"
	"io"
	"sort"
	"testing"

	"github.com/urfave/cli/v2"

	draapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

// envFlag is one environment variable the CLI reads, and the flag it sets.
type envFlag struct {
	Env     string
	Flag    cli.Flag
	Default string
}

// findCommand returns the named top-level command of the app, or nil.
func findCommand(a *cli.App, name string) *cli.Command {
	for _, c := range a.Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// flagEnv returns the environment variables a flag reads, if it reads any.
func flagEnv(f cli.Flag) []string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.GetEnvVars()
	}
	return nil
}

// addFlags records every environment variable of flags into into.
func addFlags(into map[string]envFlag, flags []cli.Flag) {
	for _, f := range flags {
		def := ""
		if d, ok := f.(cli.DocGenerationFlag); ok {
			def = d.GetValue()
		}
		for _, e := range flagEnv(f) {
			into[e] = envFlag{Env: e, Flag: f, Default: def}
		}
	}
}

// addCommandsRecursively records the flags of cmds and all their subcommands.
func addCommandsRecursively(into map[string]envFlag, cmds []*cli.Command) {
	for _, c := range cmds {
		addFlags(into, c.Flags)
		addCommandsRecursively(into, c.Subcommands)
	}
}

// allCLIEnv returns every environment variable any part of either binary
// reads.
func allCLIEnv() map[string]envFlag {
	m := map[string]envFlag{}
	for _, a := range []*cli.App{app.New(), draapp.New()} {
		addFlags(m, a.Flags)
		addCommandsRecursively(m, a.Commands)
	}
	return m
}

// cliEnv returns the environment variables that p reads: for `intel-gpu-cdi
// plugin`, the app's global flags and the command's own (and its
// subcommands'); for intel-gpu-cdi-dra, which runs without a subcommand, the
// app's flags.
func cliEnv(t *testing.T, p program) map[string]envFlag {
	t.Helper()
	m := map[string]envFlag{}
	if p == draDriver {
		addFlags(m, draapp.New().Flags)
		return m
	}
	a := app.New()
	c := findCommand(a, "plugin")
	if c == nil {
		t.Fatal("the CLI has no plugin command")
	}
	addFlags(m, a.Flags)
	addFlags(m, c.Flags)
	addCommandsRecursively(m, c.Subcommands)
	return m
}

// checkEnvAgainstCLI fails for each variable in env that p does not read,
// and for each value its flag cannot parse (the flag is applied to a
// throwaway flag set with the variable in the environment, which is what
// the CLI does at start-up).
func checkEnvAgainstCLI(t *testing.T, p program, env map[string]string) {
	t.Helper()
	known := cliEnv(t, p)
	var names []string
	for n := range env {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, ok := known[n]
		if !ok {
			if _, elsewhere := allCLIEnv()[n]; elsewhere {
				t.Errorf("env %s belongs to another command: %s does not read it", n, p)
			} else {
				t.Errorf("env %s is not read by %s (neither binary defines a flag with that env var)", n, p)
			}
			continue
		}
		t.Setenv(n, env[n])
		fs := flag.NewFlagSet("check", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		if err := f.Flag.Apply(fs); err != nil {
			t.Errorf("env %s=%q does not parse for --%s: %v", n, env[n], f.Flag.Names()[0], err)
		}
	}
}
