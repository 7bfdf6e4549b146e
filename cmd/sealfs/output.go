package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// writeJSON prints v as indented JSON, one document per command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// field is one "key: value" line of text output.
type field struct{ key, value string }

// writeFields prints aligned "key: value" lines, values in one column so
// people can scan them and scripts can split on the first ": ".
func writeFields(w io.Writer, fields []field) error {
	width := 0
	for _, f := range fields {
		width = max(width, len(f.key))
	}
	var b strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&b, "%-*s %s\n", width+1, f.key+":", f.value)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// isTerminal reports whether w is a character device, without a
// dependency on golang.org/x/term: enough to decide whether to draw progress.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine draws "label NN%" on stderr when it is a terminal. When it
// is not, update is nil (the library then skips progress) and finish does
// nothing, so piped stderr stays clean.
func progressLine(w io.Writer, label string) (update func(done, total uint64), finish func()) {
	if !isTerminal(w) {
		return nil, func() {}
	}
	return drawProgress(w, label)
}

// drawProgress redraws the line in place, only when the percentage changes,
// and blanks it when finished so the summary starts on a clean line.
func drawProgress(w io.Writer, label string) (update func(done, total uint64), finish func()) {
	last := -1
	update = func(done, total uint64) {
		if total == 0 {
			return
		}
		pct := int(min(done, total) * 100 / total)
		if pct != last {
			last = pct
			fmt.Fprintf(w, "\r%s %3d%%", label, pct)
		}
	}
	finish = func() {
		if last >= 0 {
			fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", len(label)+5))
		}
	}
	return update, finish
}
