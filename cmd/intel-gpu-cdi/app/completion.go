package app

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/urfave/cli/v2"
)

// completeCommandName is the hidden command the shell scripts call:
// `intel-gpu-cdi __complete <word>... <current word>` prints one candidate
// per line for the current (possibly empty) word. It reads the app's
// commands and flags and nothing else: whatever the words are (--, a
// partial flag, plugin), no command runs, so completion can neither write,
// remove nor listen. urfave/cli's own --generate-bash-completion is off: it
// ran the command's action for a line with "--" in it.
const completeCommandName = "__complete"

// shells are what `completion` prints a script for.
var shells = []string{"bash", "zsh", "fish"}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (" + strings.Join(shells, ", ") + ")",
		ArgsUsage: strings.Join(shells, "|"),
		Description: "bash:  source <(intel-gpu-cdi completion bash)\n" +
			"zsh:   source <(intel-gpu-cdi completion zsh)   (after compinit)\n" +
			"fish:  intel-gpu-cdi completion fish | source\n" +
			"The scripts ask the binary for candidates, so they follow its version.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || completionScripts[c.Args().First()] == "" {
				return usageErrorf(c, "want one argument, %s; got %q", strings.Join(shells, ", "), c.Args().Slice())
			}
			_, err := io.WriteString(c.App.Writer, completionScripts[c.Args().First()])
			return err
		},
	}
}

func completeCommand() *cli.Command {
	return &cli.Command{
		Name:            completeCommandName,
		Hidden:          true,
		HideHelp:        true,
		SkipFlagParsing: true,
		ArgsUsage:       "<word>... <current word>",
		Action: func(c *cli.Context) error {
			words := c.Args().Slice()
			if len(words) == 0 {
				words = []string{""}
			}
			for _, cand := range complete(c.App, words[:len(words)-1], words[len(words)-1]) {
				if _, err := fmt.Fprintln(c.App.Writer, cand); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// flagChoices are the values of the flags that take one of a fixed set,
// keyed "command --flag", or "--flag" when every command agrees.
func flagChoices() map[string][]string {
	return map[string][]string{
		"list --format":          listFormats,
		"generate --format":      specFormats,
		"--by-path":              byPathModes,
		"--allocation-policy":    allocationPolicies,
		"--device-list-strategy": deviceListStrategies,
		"--log-level":            logLevels,
		"--log-format":           logFormats,
		"--health-sources":       healthSources,
	}
}

// The plugin's fixed sets, as kubeplugin spells them.
var (
	allocationPolicies   = names(deviceplugin.Policies)
	deviceListStrategies = names(deviceplugin.AllStrategies)
	healthSources        = append(health.SourceNames(), "all", "none")
)

func names[S ~string](values []S) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = string(v)
	}
	return out
}

// commaLists take several of their values, separated by commas.
var commaLists = map[string]bool{"--device-list-strategy": true, "--health-sources": true}

func choicesFor(command, flag string) []string {
	choices := flagChoices()
	if v, ok := choices[command+" "+flag]; ok {
		return v
	}
	return choices[flag]
}

// complete returns the candidates for cur, the word being completed, after
// the words before it (the program name left out).
func complete(a *cli.App, before []string, cur string) []string {
	var (
		cmd          *cli.Command // nil: still at the top level
		positional   []string
		pendingValue cli.Flag // the flag whose value cur is
		afterDashes  bool
	)
	for _, w := range before {
		switch {
		case pendingValue != nil:
			pendingValue = nil
		case afterDashes:
			positional = append(positional, w)
		case w == "--":
			afterDashes = true
		case strings.HasPrefix(w, "-") && w != "-":
			name, _, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			if f := lookupFlag(flagsOf(a, cmd), name); f != nil && takesValue(f) && !hasValue {
				pendingValue = f
			}
		case cmd == nil && len(positional) == 0 && visibleCommand(a, w) != nil:
			cmd = visibleCommand(a, w)
		default:
			positional = append(positional, w)
		}
	}

	var cands []string
	switch {
	case pendingValue != nil:
		cands = flagValues(commandOf(cmd), pendingValue, "", cur)
	case afterDashes:
		// Only arguments follow "--", and no command takes one.
	case strings.HasPrefix(cur, "-"):
		if name, value, ok := strings.Cut(cur, "="); ok {
			if f := lookupFlag(flagsOf(a, cmd), strings.TrimLeft(name, "-")); f != nil && takesValue(f) {
				cands = flagValues(commandOf(cmd), f, name+"=", value)
			}
			break
		}
		for _, f := range flagsOf(a, cmd) {
			for _, n := range f.Names() {
				cands = append(cands, dashed(n))
			}
		}
	case cmd == nil && len(positional) == 0:
		for _, c := range a.Commands {
			if !c.Hidden {
				cands = append(cands, c.Name)
			}
		}
	case cmd != nil && cmd.Name == "help" && len(positional) == 0:
		for _, c := range a.Commands {
			if !c.Hidden && c.Name != "help" {
				cands = append(cands, c.Name)
			}
		}
	case cmd != nil && cmd.Name == "completion" && len(positional) == 0:
		cands = shells
	}
	out := []string{}
	for _, c := range cands {
		if strings.HasPrefix(c, cur) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// flagValues returns the choices of f as words starting with prefix (the
// "--flag=" of a single word), for the value typed so far. For a comma
// list the choices continue what is already there.
func flagValues(command string, f cli.Flag, prefix, typed string) []string {
	name := "--" + f.Names()[0]
	choices := choicesFor(command, name)
	if !commaLists[name] {
		out := make([]string, 0, len(choices))
		for _, c := range choices {
			out = append(out, prefix+c)
		}
		return out
	}
	done := ""
	if i := strings.LastIndex(typed, ","); i >= 0 {
		done = typed[:i+1]
	}
	var out []string
	for _, c := range choices {
		if !slices.Contains(strings.Split(done, ","), c) {
			out = append(out, prefix+done+c)
		}
	}
	return out
}

func commandOf(cmd *cli.Command) string {
	if cmd == nil {
		return ""
	}
	return cmd.Name
}

// flagsOf returns the flags one may type at this point: the command's, or
// the global ones before a command.
func flagsOf(a *cli.App, cmd *cli.Command) []cli.Flag {
	flags := a.Flags
	if cmd != nil {
		flags = cmd.Flags
	}
	if lookupFlag(flags, "help") == nil {
		flags = append(slices.Clip(flags), cli.HelpFlag)
	}
	return flags
}

func visibleCommand(a *cli.App, name string) *cli.Command {
	if c := a.Command(name); c != nil && !c.Hidden {
		return c
	}
	return nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// The scripts hand the words of the line up to the cursor to __complete
// and fall back to file names when it has no candidate. Each ends with a
// newline, as a file a shell sources must.
var completionScripts = map[string]string{
	"bash": `# bash completion for intel-gpu-cdi
# this shell:    source <(intel-gpu-cdi completion bash)
# every shell:   intel-gpu-cdi completion bash > /etc/bash_completion.d/intel-gpu-cdi
_intel_gpu_cdi() {
	local line=${COMP_LINE:0:COMP_POINT} cur=${COMP_WORDS[COMP_CWORD]} prefix c
	local -a words
	read -r -a words <<<"$line"
	if [[ -z $line || $line == *[[:space:]] ]]; then
		words+=("")
	fi
	# bash cuts --format=js into --format, = and js and replaces only its
	# own current word; __complete answers for the whole word.
	prefix=${words[${#words[@]}-1]}
	prefix=${prefix%"$cur"}
	COMPREPLY=()
	while IFS= read -r c; do
		[[ -n $c ]] && COMPREPLY+=("${c#"$prefix"}")
	done < <("${words[0]}" ` + completeCommandName + ` "${words[@]:1}" 2>/dev/null)
}
complete -o default -F _intel_gpu_cdi intel-gpu-cdi
`,
	"zsh": `#compdef intel-gpu-cdi
# zsh completion for intel-gpu-cdi
# this shell:    source <(intel-gpu-cdi completion zsh)    (after compinit)
# every shell:   intel-gpu-cdi completion zsh > "${fpath[1]}/_intel-gpu-cdi"
_intel-gpu-cdi() {
	local -a candidates
	local c
	for c in "${(@f)$("${words[1]}" ` + completeCommandName + ` "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
		[[ -n $c ]] && candidates+=("$c")
	done
	if (( ${#candidates} )); then
		compadd -- "${candidates[@]}"
	else
		_files
	fi
}
# Autoloaded from fpath this file is the function's first body: define it,
# then complete. Sourced, it registers the function.
if [[ ${funcstack[1]} == _intel-gpu-cdi ]]; then
	_intel-gpu-cdi "$@"
else
	compdef _intel-gpu-cdi intel-gpu-cdi
fi
`,
	"fish": `# fish completion for intel-gpu-cdi
# this shell:    intel-gpu-cdi completion fish | source
# every shell:   intel-gpu-cdi completion fish > ~/.config/fish/completions/intel-gpu-cdi.fish
function __intel_gpu_cdi_complete
	set -l words (commandline -opc)
	set -l cur (commandline -ct)
	set -l candidates ($words[1] ` + completeCommandName + ` $words[2..-1] "$cur" 2>/dev/null)
	if test (count $candidates) -eq 0
		__fish_complete_path "$cur"
		return
	end
	printf '%s\n' $candidates
end
complete -c intel-gpu-cdi -f -a '(__intel_gpu_cdi_complete)'
`,
}
