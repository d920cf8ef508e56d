package app

import (
	"flag"
	"os"

	"github.com/urfave/cli/v2"
)

// Conventions makes every command of a follow the same rules, whoever
// wrote its flags:
//   - an empty environment variable is no setting at all (urfave/cli
//     would take "" as the value of a string flag);
//   - a common flag (--log-level, --sysfs-root, ...) may come before the
//     command or after it; after it wins, and either wins over the
//     environment;
//   - usage errors are returned, not printed with the help on stdout;
//   - a command takes no arguments unless it says so.
//
// The DRA driver's binary follows them too. An app whose own Action runs
// (no command) takes no arguments either.
func Conventions(a *cli.App) {
	a.OnUsageError = onUsageError
	// Errors go back to Run, which alone decides the exit status: the
	// default handler calls os.Exit from inside the library.
	a.ExitErrHandler = func(*cli.Context, error) {}
	globals := map[string]cli.Flag{}
	for i, f := range a.Flags {
		a.Flags[i] = envAware(f, nil)
		globals[f.Names()[0]] = a.Flags[i]
	}
	for _, c := range a.Commands {
		for i, f := range c.Flags {
			c.Flags[i] = envAware(f, globals[f.Names()[0]])
		}
		c.OnUsageError = onUsageError
		// `generate help` is an unexpected argument, not a help topic.
		c.HideHelpCommand = true
		if c.ArgsUsage == "" && c.Action != nil {
			c.Action = NoArgs(c.Action)
		}
	}
}

// NoArgs makes an action refuse arguments as a usage error.
func NoArgs(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.Args().Present() {
			name := c.App.Name
			if c.Command != nil && c.Command.Name != "" {
				name = c.Command.Name
			}
			return usageErrorf(c, "unexpected argument %q: %s takes only flags", c.Args().First(), name)
		}
		return action(c)
	}
}

// envAware wraps a flag so that it ignores an empty environment variable
// and, when parent is the same flag given before the command, starts from
// the value parent ended with instead of its own default and variable.
//
// The wrapper also answers Names from a copy made here: urfave/cli's own
// Names runs a regular expression over every name on every call, and it
// calls Names of every flag of the command for every flag it looks up
// (runFlagActions → IsSet → lookupFlag), which at start-up was 0.07 MB of
// garbage, quadratic in the number of flags.
func envAware(f cli.Flag, parent cli.Flag) cli.Flag {
	names := f.Names()
	switch f := f.(type) {
	case *cli.StringFlag:
		w := &stringFlag{StringFlag: f, names: names}
		if p, ok := parent.(*stringFlag); ok && p.Destination != nil {
			w.parent = p.Destination
		}
		return w
	case *cli.BoolFlag:
		w := &boolFlag{BoolFlag: f, names: names}
		if p, ok := parent.(*boolFlag); ok && p.Destination != nil {
			w.parent = p.Destination
		}
		return w
	case *cli.IntFlag:
		return &intFlag{IntFlag: f, names: names}
	case *cli.Uint64Flag:
		return &uint64Flag{Uint64Flag: f, names: names}
	case *cli.DurationFlag:
		return &durationFlag{DurationFlag: f, names: names}
	case *cli.Float64Flag:
		return &float64Flag{Float64Flag: f, names: names}
	}
	return f
}

type stringFlag struct {
	*cli.StringFlag
	parent *string
	names  []string
}

func (f *stringFlag) Names() []string { return f.names }

func (f *stringFlag) Apply(set *flag.FlagSet) error {
	if f.parent != nil {
		keepDefaultText(&f.DefaultText, f.GetDefaultText())
		f.Value = *f.parent
	}
	return withEnv(&f.EnvVars, f.parent != nil, func() error { return f.StringFlag.Apply(set) })
}

type boolFlag struct {
	*cli.BoolFlag
	parent *bool
	names  []string
}

func (f *boolFlag) Names() []string { return f.names }

func (f *boolFlag) Apply(set *flag.FlagSet) error {
	if f.parent != nil {
		keepDefaultText(&f.DefaultText, f.GetDefaultText())
		f.Value = *f.parent
	}
	return withEnv(&f.EnvVars, f.parent != nil, func() error { return f.BoolFlag.Apply(set) })
}

type intFlag struct {
	*cli.IntFlag
	names []string
}

func (f *intFlag) Names() []string { return f.names }

func (f *intFlag) Apply(set *flag.FlagSet) error {
	return withEnv(&f.EnvVars, false, func() error { return f.IntFlag.Apply(set) })
}

type uint64Flag struct {
	*cli.Uint64Flag
	names []string
}

func (f *uint64Flag) Names() []string { return f.names }

func (f *uint64Flag) Apply(set *flag.FlagSet) error {
	return withEnv(&f.EnvVars, false, func() error { return f.Uint64Flag.Apply(set) })
}

type durationFlag struct {
	*cli.DurationFlag
	names []string
}

func (f *durationFlag) Names() []string { return f.names }

func (f *durationFlag) Apply(set *flag.FlagSet) error {
	return withEnv(&f.EnvVars, false, func() error { return f.DurationFlag.Apply(set) })
}

type float64Flag struct {
	*cli.Float64Flag
	names []string
}

func (f *float64Flag) Names() []string { return f.names }

func (f *float64Flag) Apply(set *flag.FlagSet) error {
	return withEnv(&f.EnvVars, false, func() error { return f.Float64Flag.Apply(set) })
}

// keepDefaultText pins the default the help shows before the value is
// replaced by the parent's: the help must show the real default.
func keepDefaultText(text *string, def string) {
	if *text == "" {
		*text = def
	}
}

// withEnv runs apply with only the variables of envs that are set and not
// empty, or with none (inherited: the parent flag has read them already),
// and restores envs after, so that the help still lists them.
func withEnv(envs *[]string, none bool, apply func() error) error {
	all := *envs
	var set []string
	if !none {
		for _, e := range all {
			if os.Getenv(e) != "" {
				set = append(set, e)
			}
		}
	}
	*envs = set
	defer func() { *envs = all }()
	return apply()
}
