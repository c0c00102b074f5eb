package cudaops

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The kernel parameter lists of kernel_sigs.go: parsing, the check against the PTX .entry lists, and
// the binding of a launcher's arguments. This file has no build tag: CPU CI runs all of it.

// paramKind is the type of one kernel parameter (see kernelSigs for the C types).
type paramKind uint8

const (
	kindPtr paramKind = iota + 1
	kindFault
	kindI32
	kindU32
	kindI64
	kindU64
	kindF32
	kindF64
)

func (k paramKind) String() string {
	switch k {
	case kindPtr:
		return "ptr"
	case kindFault:
		return "fault"
	case kindI32:
		return "i32"
	case kindU32:
		return "u32"
	case kindI64:
		return "i64"
	case kindU64:
		return "u64"
	case kindF32:
		return "f32"
	case kindF64:
		return "f64"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func parseKind(s string) (paramKind, bool) {
	for k := kindPtr; k <= kindF64; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// ptxMatches reports whether a kernel parameter of PTX type typ (".u64", ".f32", ...) can be of kind k:
// the same width and, for floating point, the same class. PTX does not tell a pointer from a 64-bit
// integer, or int from unsigned int; the declaration does.
func (k paramKind) ptxMatches(typ string) bool {
	switch k {
	case kindPtr, kindFault, kindI64, kindU64:
		return typ == ".u64" || typ == ".s64" || typ == ".b64"
	case kindI32, kindU32:
		return typ == ".u32" || typ == ".s32" || typ == ".b32"
	case kindF32:
		return typ == ".f32"
	case kindF64:
		return typ == ".f64"
	}
	return false
}

// kernelParam is one declared parameter.
type kernelParam struct {
	name string
	kind paramKind
}

// kernelSig is one kernel's declared parameter list.
type kernelSig struct {
	name   string
	params []kernelParam
	fault  int // index of the fault parameter, -1 when the kernel has none
}

func (s *kernelSig) String() string {
	parts := make([]string, len(s.params))
	for i, p := range s.params {
		parts[i] = p.name + " " + p.kind.String()
	}
	return s.name + "(" + strings.Join(parts, ", ") + ")"
}

// sigTable maps kernel names to their declarations.
type sigTable map[string]*kernelSig

// names returns the declared kernels in sorted order.
func (t sigTable) names() []string {
	out := make([]string, 0, len(t))
	for n := range t {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var (
	sigLineRE  = regexp.MustCompile(`^([A-Za-z0-9_{},]+)\((.*)\)$`)
	identRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	repeatedRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\[([0-9]+)\]$`)
)

// parseKernelSigs parses declarations in the syntax of kernelSigs; the error lists every bad line.
func parseKernelSigs(text string) (sigTable, error) {
	t := sigTable{}
	var errs []error
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(format, a...)))
		}
		m := sigLineRE.FindStringSubmatch(line)
		if m == nil {
			bad("want name(param kind, ...)")
			continue
		}
		names, err := expandName(m[1])
		if err != nil {
			bad("%v", err)
			continue
		}
		params, fault, err := parseParams(m[2])
		if err != nil {
			bad("%v", err)
			continue
		}
		for _, n := range names {
			if _, dup := t[n]; dup {
				bad("kernel %s is declared twice", n)
				continue
			}
			t[n] = &kernelSig{name: n, params: params, fault: fault}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("cudaops: kernel declarations: %w", errors.Join(errs...))
	}
	return t, nil
}

// expandName expands every {a,b,...} group of a declared name (their cartesian product, in order).
func expandName(pattern string) ([]string, error) {
	open := strings.IndexByte(pattern, '{')
	if open < 0 {
		if !identRE.MatchString(pattern) || strings.ContainsAny(pattern, "},") {
			return nil, fmt.Errorf("bad kernel name %q", pattern)
		}
		return []string{pattern}, nil
	}
	end := strings.IndexByte(pattern[open:], '}')
	if end < 0 {
		return nil, fmt.Errorf("unclosed { in %q", pattern)
	}
	end += open
	rest, err := expandName("x" + pattern[end+1:]) // "x": the tail alone may start with a digit or be empty
	if err != nil {
		return nil, err
	}
	var out []string
	for _, alt := range strings.Split(pattern[open+1:end], ",") {
		if alt == "" || strings.ContainsAny(alt, "{") {
			return nil, fmt.Errorf("bad alternative in %q", pattern)
		}
		for _, r := range rest {
			n := pattern[:open] + alt + r[1:]
			if !identRE.MatchString(n) {
				return nil, fmt.Errorf("bad kernel name %q", n)
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// parseParams parses "name kind, name[N] kind, ...".
func parseParams(list string) ([]kernelParam, int, error) {
	var params []kernelParam
	fault := -1
	if strings.TrimSpace(list) == "" {
		return nil, fault, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(list, ",") {
		f := strings.Fields(item)
		if len(f) != 2 {
			return nil, 0, fmt.Errorf("parameter %q: want name kind", strings.TrimSpace(item))
		}
		kind, ok := parseKind(f[1])
		if !ok {
			return nil, 0, fmt.Errorf("parameter %s: unknown kind %q (ptr, fault, i32, u32, i64, u64, f32, f64)", f[0], f[1])
		}
		names := []string{f[0]}
		if m := repeatedRE.FindStringSubmatch(f[0]); m != nil {
			n, err := strconv.Atoi(m[2])
			if err != nil || n < 1 || n > 64 {
				return nil, 0, fmt.Errorf("parameter %s: bad count", f[0])
			}
			names = names[:0]
			for i := 0; i < n; i++ {
				names = append(names, m[1]+strconv.Itoa(i))
			}
		} else if !identRE.MatchString(f[0]) {
			return nil, 0, fmt.Errorf("bad parameter name %q", f[0])
		}
		for _, n := range names {
			if seen[n] {
				return nil, 0, fmt.Errorf("parameter %s appears twice", n)
			}
			seen[n] = true
			if kind == kindFault {
				if fault >= 0 {
					return nil, 0, fmt.Errorf("two fault parameters")
				}
				fault = len(params)
			}
			params = append(params, kernelParam{name: n, kind: kind})
		}
	}
	return params, fault, nil
}

// ptxEntry is one kernel (.entry) of a PTX module with its parameter types in order.
type ptxEntry struct {
	name   string
	params []ptxParam
}

// ptxParam is one .param of an entry: its type (".u64", ".f32", ...) and, for a by-value aggregate
// (".param .align A .b8 name[N]"), its size in bytes.
type ptxParam struct {
	typ   string
	bytes int
}

func (p ptxParam) String() string {
	if p.bytes > 0 {
		return fmt.Sprintf("%s[%d]", p.typ, p.bytes)
	}
	return p.typ
}

var (
	ptxEntryRE = regexp.MustCompile(`(?m)^[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*\.entry[ \t]+([A-Za-z_$%][A-Za-z0-9_$%]*)[ \t]*\(`)
	ptxTypeRE  = regexp.MustCompile(`^\.[bsuf](8|16|32|64)$`)
	ptxArrayRE = regexp.MustCompile(`\[([0-9]+)\]$`)
)

// parsePTXEntries returns the kernels of a PTX module in order of appearance.
func parsePTXEntries(src string) ([]ptxEntry, error) {
	var out []ptxEntry
	for _, loc := range ptxEntryRE.FindAllStringSubmatchIndex(src, -1) {
		name := src[loc[2]:loc[3]]
		rest := src[loc[1]:]
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return nil, fmt.Errorf("entry %s: unterminated parameter list", name)
		}
		e := ptxEntry{name: name}
		if list := strings.TrimSpace(rest[:end]); list != "" {
			for _, item := range strings.Split(list, ",") {
				f := strings.Fields(item)
				if len(f) < 3 || f[0] != ".param" {
					return nil, fmt.Errorf("entry %s: cannot read parameter %q", name, strings.TrimSpace(item))
				}
				var p ptxParam
				for _, tok := range f[1 : len(f)-1] {
					if ptxTypeRE.MatchString(tok) {
						p.typ = tok
						break
					}
				}
				if p.typ == "" {
					return nil, fmt.Errorf("entry %s: parameter %q has no type", name, strings.TrimSpace(item))
				}
				if m := ptxArrayRE.FindStringSubmatch(f[len(f)-1]); m != nil {
					p.bytes, _ = strconv.Atoi(m[1])
				}
				e.params = append(e.params, p)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// sigMismatchError lists every difference between the kernel declarations and the PTX modules.
type sigMismatchError struct {
	undeclared []string // draft declarations of kernels found in the PTX but not declared
	problems   []string // everything else, one line each
}

func (e *sigMismatchError) Error() string {
	var b strings.Builder
	b.WriteString("cudaops: the kernel declarations (kernel_sigs.go) do not match the embedded PTX (refusing to launch anything):")
	if len(e.undeclared) > 0 {
		fmt.Fprintf(&b, "\n  %d kernel(s) in the PTX are not declared; add to kernelSigs in cudaops/kernel_sigs.go (drafts: name each "+
			"parameter and check each kind against the .cu signature: PTX .u64 is ptr, fault, i64 or u64, .u32 is i32 or u32):", len(e.undeclared))
		for _, d := range e.undeclared {
			b.WriteString("\n    " + d)
		}
	}
	for _, p := range e.problems {
		b.WriteString("\n  " + p)
	}
	return b.String()
}

// checkKernelPTX checks PTX modules (file name -> text) against the declarations: every .entry is
// declared with the same parameter count and compatible types in order, every declared kernel is in
// exactly one module. The error (*sigMismatchError) lists every difference.
func checkKernelPTX(sigs sigTable, modules map[string]string) error {
	e := &sigMismatchError{}
	files := make([]string, 0, len(modules))
	for f := range modules {
		files = append(files, f)
	}
	sort.Strings(files)
	where := map[string]string{}
	for _, f := range files {
		entries, err := parsePTXEntries(modules[f])
		if err != nil {
			e.problems = append(e.problems, fmt.Sprintf("%s: %v", f, err))
			continue
		}
		for _, ent := range entries {
			if prev, dup := where[ent.name]; dup {
				e.problems = append(e.problems, fmt.Sprintf("kernel %s is defined in %s and %s", ent.name, prev, f))
				continue
			}
			where[ent.name] = f
			sig, ok := sigs[ent.name]
			if !ok {
				e.undeclared = append(e.undeclared, draftSig(ent)+"    # "+f)
				continue
			}
			e.problems = append(e.problems, compareSig(sig, ent, f)...)
		}
	}
	for _, n := range sigs.names() {
		if _, ok := where[n]; !ok {
			e.problems = append(e.problems, fmt.Sprintf("kernel %s is declared but is in no module (%s)", n, strings.Join(files, ", ")))
		}
	}
	if len(e.undeclared) == 0 && len(e.problems) == 0 {
		return nil
	}
	return e
}

// compareSig returns the differences between a declaration and a PTX entry.
func compareSig(sig *kernelSig, ent ptxEntry, file string) []string {
	var out []string
	if len(ent.params) != len(sig.params) {
		types := make([]string, len(ent.params))
		for i, p := range ent.params {
			types[i] = p.String()
		}
		out = append(out, fmt.Sprintf("kernel %s (%s): the PTX has %d parameters (%s), the declaration %d: %s",
			sig.name, file, len(ent.params), strings.Join(types, " "), len(sig.params), sig))
	}
	for i := 0; i < min(len(ent.params), len(sig.params)); i++ {
		p, q := sig.params[i], ent.params[i]
		if q.bytes > 0 || !p.kind.ptxMatches(q.typ) {
			out = append(out, fmt.Sprintf("kernel %s (%s): parameter %d (%s) is declared %s, the PTX has %s",
				sig.name, file, i, p.name, p.kind, q))
		}
	}
	return out
}

// draftSig writes a declaration for a PTX entry (parameter names p0, p1, ...; 64-bit integers as
// pointers, 32-bit integers as i32).
func draftSig(ent ptxEntry) string {
	parts := make([]string, len(ent.params))
	for i, p := range ent.params {
		kind := "?" + p.String()
		switch {
		case p.bytes > 0:
		case kindPtr.ptxMatches(p.typ):
			kind = "ptr"
		case kindI32.ptxMatches(p.typ):
			kind = "i32"
		case p.typ == ".f32":
			kind = "f32"
		case p.typ == ".f64":
			kind = "f64"
		}
		parts[i] = fmt.Sprintf("p%d %s", i, kind)
	}
	return ent.name + "(" + strings.Join(parts, ", ") + ")"
}

// arg is one kernel argument as a launcher passes it: its kind and its bits (i32 and u32 hold the Go
// value, range-checked when bound).
type arg struct {
	kind paramKind
	bits uint64
}

func i32(v int) arg          { return arg{kindI32, uint64(int64(v))} }
func u32(v uint32) arg       { return arg{kindU32, uint64(v)} }
func i64(v int64) arg        { return arg{kindI64, uint64(v)} }
func u64(v uint64) arg       { return arg{kindU64, v} }
func f32(v float32) arg      { return arg{kindF32, uint64(math.Float32bits(v))} }
func f64(v float64) arg      { return arg{kindF64, math.Float64bits(v)} }
func rawPtrArg(p uint64) arg { return arg{kindPtr, p} }

// faultArg stands for the kernel's fault parameter: bind passes the kernel's own fault word.
func faultArg() arg { return arg{kind: kindFault} }

func (a arg) String() string {
	switch a.kind {
	case kindI32, kindI64:
		return fmt.Sprintf("%s %d", a.kind, int64(a.bits))
	case kindF32:
		return fmt.Sprintf("f32 %v", math.Float32frombits(uint32(a.bits)))
	case kindF64:
		return fmt.Sprintf("f64 %v", math.Float64frombits(a.bits))
	case kindFault:
		return "fault"
	}
	return fmt.Sprintf("%s %#x", a.kind, a.bits)
}

// bind checks a launcher's arguments against the declaration (count, then kind and range of each) and
// writes the parameter words into words[:len(args)] (grown when short): 8 bytes per parameter, 4-byte
// values in the low half (where a little-endian device reads them). The fault parameter gets faultWord,
// the kernel's own word of the fault block; a launcher may pass faultArg() or the block's address
// faultBase as a pointer there.
func (s *kernelSig) bind(args []arg, faultBase, faultWord uint64, words []uint64) ([]uint64, error) {
	if len(args) != len(s.params) {
		return words, fmt.Errorf("cudaops: kernel %s takes %d parameters, the launcher passed %d (declaration: %s)", s.name, len(s.params), len(args), s)
	}
	if cap(words) < len(args) {
		words = make([]uint64, len(args))
	}
	words = words[:len(args)]
	for i, a := range args {
		p := s.params[i]
		bad := func(why string) error {
			return fmt.Errorf("cudaops: kernel %s parameter %d (%s %s): the launcher passed %v: %s (declaration: %s)", s.name, i, p.name, p.kind, a, why, s)
		}
		switch {
		case p.kind == kindFault && a.kind == kindFault:
			words[i] = faultWord
			continue
		case p.kind == kindFault && a.kind == kindPtr:
			if a.bits != faultBase {
				return words, bad("a pointer other than the fault block")
			}
			words[i] = faultWord
			continue
		case a.kind != p.kind:
			return words, bad("wrong kind")
		}
		switch p.kind {
		case kindI32:
			if v := int64(a.bits); v < math.MinInt32 || v > math.MaxInt32 {
				return words, bad("out of the range of int")
			}
			words[i] = uint64(uint32(int32(int64(a.bits))))
		case kindU32:
			if a.bits > math.MaxUint32 {
				return words, bad("out of the range of unsigned int")
			}
			words[i] = a.bits
		default:
			words[i] = a.bits
		}
	}
	return words, nil
}
