package cudaops

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// argKinds are the argument constructors of the launchers and the kind each passes.
var argKinds = map[string]paramKind{
	"ptrArg": kindPtr, "rawPtrArg": kindPtr, "faultArg": kindFault, "i32": kindI32, "u32": kindU32,
	"i64": kindI64, "u64": kindU64, "f32": kindF32, "f64": kindF64,
}

// TestLaunchSitesMatchDeclarations reads every d.launch(name, cfg, args...) of the package's source,
// tagged files included, and checks it against the kernel declarations without a GPU: the name (a
// literal, or literal parts joined with variable parts such as the dtype suffix) must match declared
// kernels, and for each of them the argument count and the kind of every argument built by a
// constructor (ptrArg, i32, f64, faultArg, ...) must be the declared ones. (Device.launch checks the
// same again at run time, for the arguments this cannot see.)
func TestLaunchSitesMatchDeclarations(t *testing.T) {
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
	}
	tables := stringTables(parsed)
	sites, checked := 0, 0
	used := map[string]bool{}
	for _, f := range parsed {
		ast.Inspect(f, func(n ast.Node) bool {
			fn, ok := n.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				return true
			}
			rowNames := rowKernelNames(fn)
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "launch" || len(call.Args) < 2 {
					return true
				}
				sites++
				at := fset.Position(call.Pos()).String()
				pattern, ok := namePattern(call.Args[0], rowNames, tables)
				if !ok {
					t.Errorf("%s: cannot read the kernel name of this launch", at)
					return true
				}
				re := regexp.MustCompile("^" + pattern + "$")
				var matched []string
				for _, name := range sigs.names() {
					if re.MatchString(name) {
						matched = append(matched, name)
					}
				}
				if len(matched) == 0 {
					t.Errorf("%s: launches %s, which matches no declared kernel", at, pattern)
					return true
				}
				args := call.Args[2:]
				spread := call.Ellipsis.IsValid()
				for _, name := range matched {
					used[name] = true
					sig := sigs[name]
					if spread {
						continue // a slice built elsewhere: count and kinds are checked at run time
					}
					if len(args) != len(sig.params) {
						t.Errorf("%s: %s takes %d parameters, the launch passes %d (%s)", at, name, len(sig.params), len(args), sig)
						continue
					}
					for i, a := range args {
						kind, fault, known := argKind(a)
						p := sig.params[i]
						switch {
						case !known:
						case p.kind == kindFault && (kind == kindFault || fault):
						case kind != p.kind || fault:
							t.Errorf("%s: %s parameter %d (%s %s) gets %s", at, name, i, p.name, p.kind, types(a))
						}
					}
				}
				checked++
				return true
			})
			return false
		})
	}
	if sites < 40 || checked != sites {
		t.Errorf("%d launch sites, %d checked", sites, checked)
	}
	// Every declared kernel is launched somewhere (a kernel no launcher reaches is dead code or a typo).
	var unused []string
	for _, name := range sigs.names() {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("declared kernels no launch site names: %v", unused)
	}
}

// namePattern turns a launch's kernel-name expression into a regular expression: string literals
// literally, an element of a package-level table of strings (binaryNames[op]) as one of its values, a
// variable assigned from rowKernel("base", ...) in the same function as base_ and a dtype with an
// optional vector width, any other operand (a dtype suffix) as one name part without underscores.
func namePattern(e ast.Expr, rowNames map[string]string, tables map[string][]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return regexp.QuoteMeta(s), err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		l, ok1 := namePattern(e.X, rowNames, tables)
		r, ok2 := namePattern(e.Y, rowNames, tables)
		return l + r, ok1 && ok2
	case *ast.Ident:
		if pattern, ok := rowNames[e.Name]; ok {
			return pattern, true
		}
		return "[a-z0-9]+", true
	case *ast.IndexExpr:
		if id, ok := e.X.(*ast.Ident); ok && len(tables[id.Name]) > 0 {
			alts := make([]string, len(tables[id.Name]))
			for i, v := range tables[id.Name] {
				alts[i] = regexp.QuoteMeta(v)
			}
			return "(" + strings.Join(alts, "|") + ")", true
		}
		return "[a-z0-9]+", true
	case *ast.CallExpr, *ast.SelectorExpr:
		return "[a-z0-9]+", true
	}
	return "", false
}

// stringTables returns the package-level variables initialised with a composite literal of strings
// (binaryNames) and their values.
func stringTables(files []*ast.File) map[string][]string {
	out := map[string][]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, v := range vs.Values {
					lit, ok := v.(*ast.CompositeLit)
					if !ok || i >= len(vs.Names) {
						continue
					}
					var vals []string
					for _, el := range lit.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							el = kv.Value
						}
						if b, ok := el.(*ast.BasicLit); ok && b.Kind == token.STRING {
							if s, err := strconv.Unquote(b.Value); err == nil {
								vals = append(vals, s)
							}
						}
					}
					if len(vals) > 0 {
						out[vs.Names[i].Name] = vals
					}
				}
			}
		}
	}
	return out
}

// rowKernelNames maps the variables of fn assigned from rowKernel("base", ...) to base.
func rowKernelNames(fn *ast.FuncDecl) map[string]string {
	out := map[string]string{}
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Rhs) != 1 || len(as.Lhs) == 0 {
			return true
		}
		call, ok := as.Rhs[0].(*ast.CallExpr)
		id, ok2 := as.Lhs[0].(*ast.Ident)
		if !ok || !ok2 {
			return true
		}
		f, ok := call.Fun.(*ast.Ident)
		if !ok {
			return true
		}
		base := ""
		if len(call.Args) > 0 {
			if lit, ok := call.Args[0].(*ast.BasicLit); ok {
				base, _ = strconv.Unquote(lit.Value)
			}
		}
		// The name-building helpers, as patterns of the names they return.
		switch {
		case f.Name == "rowKernel" && base != "":
			out[id.Name] = regexp.QuoteMeta(base) + "_[a-z0-9]+(_v[0-9]+)?"
		case f.Name == "bf16RowKernel" && base != "":
			out[id.Name] = regexp.QuoteMeta(base) + "(bf16|f32)(_v8)?"
		case f.Name == "floatSuffix" || f.Name == "suffix":
			out[id.Name] = "(f32|f64)"
		case f.Name == "castSuffix":
			out[id.Name] = "(f32|f64|bf16)_(f32|f64|bf16)"
		}
		return true
	})
	return out
}

// argKind returns the kind an argument expression passes when it is a constructor call (fault: a
// pointer to the device's fault block, ptrArg(d.fault)); known is false for anything else.
func argKind(e ast.Expr) (kind paramKind, fault, known bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return 0, false, false
	}
	f, ok := call.Fun.(*ast.Ident)
	if !ok {
		return 0, false, false
	}
	kind, known = argKinds[f.Name]
	if known && kind == kindPtr && len(call.Args) == 1 {
		if sel, ok := call.Args[0].(*ast.SelectorExpr); ok && sel.Sel.Name == "fault" {
			fault = true
		}
	}
	return kind, fault, known
}

// types describes an argument expression for a message.
func types(e ast.Expr) string {
	if k, fault, ok := argKind(e); ok {
		if fault {
			return "the fault block (ptr)"
		}
		return k.String()
	}
	return "an expression"
}
