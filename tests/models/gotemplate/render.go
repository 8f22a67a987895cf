// Renders an Ollama chat template the way Ollama does: Go's text/template over
// .Messages (role, content). Reads {"template": "...", "messages": [...]} as JSON on
// stdin and writes the rendered prompt to stdout. Used by tests/models/test_chat_format.py.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// The fields Ollama's template.Values exposes to a template.
type Values struct {
	Messages []Message
	System   string
	Prompt   string
	Response string
}

func main() {
	var in struct {
		Template string    `json:"template"`
		Messages []Message `json:"messages"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	funcs := template.FuncMap{
		"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(2)
	}
	if err := tmpl.Execute(os.Stdout, Values{Messages: in.Messages}); err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(3)
	}
}
