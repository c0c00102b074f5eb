package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress reports training progress. On a terminal it redraws one line holding a bar, the step
// counter, the elapsed time and the caller's line; on anything else (a file, a pipe, a test buffer) it
// prints one plain line per reported step, so logs stay readable.
type progress struct {
	w        io.Writer
	total    int
	tty      bool
	width    int // terminal width in columns (tty only)
	start    time.Time
	last     time.Time // last redraw (tty only), to limit redraws
	lastStep int
	lastLine string
	drawn    bool // a bar line is on screen and needs a newline before Finish returns
	finished bool
}

// newProgress returns a progress reporter for total steps writing to w. w is treated as a terminal
// when it is an *os.File whose descriptor term.IsTerminal accepts.
func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now(), width: 80}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols
		}
	}
	return p
}

// Update reports that step (1-based, 1..total) is done; line is free text such as
// "loss 0.123 aux 2.01 load [0.25 0.30 ...]". On a terminal redraws are limited to about 20 a second
// (the last step is always drawn); otherwise every call prints one line.
func (p *progress) Update(step int, line string) {
	if p.finished {
		return
	}
	p.lastStep, p.lastLine = step, line
	if !p.tty {
		fmt.Fprintf(p.w, "step %*d/%d %s\n", digits(p.total), step, p.total, line)
		return
	}
	now := time.Now()
	if p.drawn && step < p.total && now.Sub(p.last) < 50*time.Millisecond {
		return
	}
	p.last = now
	p.draw(step, line)
}

// Finish ends the report: on a terminal it draws the final state and moves to a new line. Calling it
// more than once is harmless.
func (p *progress) Finish() {
	if p.finished {
		return
	}
	p.finished = true
	if p.tty {
		if p.lastStep > 0 {
			p.draw(p.lastStep, p.lastLine)
		}
		if p.drawn {
			fmt.Fprintln(p.w)
		}
	}
}

func (p *progress) draw(step int, line string) {
	elapsed := time.Since(p.start).Round(100 * time.Millisecond)
	head := fmt.Sprintf(" %*d/%d %s ", digits(p.total), step, p.total, elapsed)
	barWidth := 30
	if p.width < 70 {
		barWidth = 10
	}
	s := "[" + bar(step, p.total, barWidth) + "]" + head + line
	// Keep to one screen line so that \r redraws in place; cut by runes.
	if r := []rune(s); len(r) > p.width-1 {
		s = string(r[:p.width-1])
	}
	// \r returns to column 0; \x1b[K clears the rest of the previous, possibly longer, line.
	fmt.Fprint(p.w, "\r"+s+"\x1b[K")
	p.drawn = true
}

// bar renders done/total as width cells of '=' with a '>' head and spaces.
func bar(done, total, width int) string {
	if total <= 0 {
		return strings.Repeat(" ", width)
	}
	if done > total {
		done = total
	}
	if done < 0 {
		done = 0
	}
	n := done * width / total
	if n >= width {
		return strings.Repeat("=", width)
	}
	if n == 0 && done == 0 {
		return strings.Repeat(" ", width)
	}
	return strings.Repeat("=", n) + ">" + strings.Repeat(" ", width-n-1)
}

func digits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}
