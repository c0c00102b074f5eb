//go:build expertrt_cuda

package cudaops

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"

	"gorgonia.org/cu"
)

// ptxFS holds the generated PTX of every kernel family (go generate ./cudaops).
//
//go:embed ptx/*.ptx
var ptxFS embed.FS

var entryRE = regexp.MustCompile(`(?m)^\.visible \.entry ([A-Za-z0-9_]+)\(`)

// loadModules checks every embedded PTX module against the kernel declarations (checkKernelPTX: any
// difference refuses them all), then loads each into the current context (the driver JIT-compiles it
// for the GPU) and looks up all its kernels. Called once per Device.
func loadModules(sigs sigTable) (map[string]cu.Function, error) {
	names, err := fs.Glob(ptxFS, "ptx/*.ptx")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	srcs := map[string]string{}
	for _, name := range names {
		src, err := ptxFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading embedded %s: %w", name, err)
		}
		srcs[name] = string(src)
	}
	if err := checkKernelPTX(sigs, srcs); err != nil {
		return nil, err
	}
	fns := map[string]cu.Function{}
	for _, name := range names {
		src := srcs[name]
		mod, err := cu.LoadData(src)
		if err != nil {
			return nil, fmt.Errorf("loading module %s (PTX JIT): %w", name, err)
		}
		for _, m := range entryRE.FindAllStringSubmatch(src, -1) {
			fn, err := mod.Function(m[1])
			if err != nil {
				return nil, fmt.Errorf("module %s: kernel %s: %w", name, m[1], err)
			}
			if _, dup := fns[m[1]]; dup {
				return nil, fmt.Errorf("kernel %s defined in two modules", m[1])
			}
			fns[m[1]] = fn
		}
	}
	return fns, nil
}
