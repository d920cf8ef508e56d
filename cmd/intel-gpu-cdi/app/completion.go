package app

// Both scripts ask the binary itself for candidates through urfave/cli's
// --generate-bash-completion flag, so they never go stale.
var completionScripts = map[string]string{
	"bash": `# bash completion for intel-gpu-cdi
_intel_gpu_cdi() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)" -- "$cur") )
  else
    COMPREPLY=( $(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur") )
  fi
}
complete -o bashdefault -o default -F _intel_gpu_cdi intel-gpu-cdi
`,
	"zsh": `#compdef intel-gpu-cdi
# zsh completion for intel-gpu-cdi
_intel_gpu_cdi() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _intel_gpu_cdi intel-gpu-cdi
`,
}
