package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/expertrt/expertrt-go/internal/bf16"
)

// ErrNotFound is wrapped by Checkpoint lookups of a tensor name the checkpoint does not hold.
var ErrNotFound = errors.New("tensor not found")

// IndexFileName is the name of the shard index of a sharded Hugging Face checkpoint.
const IndexFileName = "model.safetensors.index.json"

// Checkpoint is a set of safetensors files seen as one name space: a single file, a sharded
// checkpoint's index (model.safetensors.index.json, whose "weight_map" maps tensor names to shard file
// names in the same folder), or a folder holding either an index or *.safetensors files. Shards named
// by an index are opened (header only) on first use. A Checkpoint may be read from several goroutines.
type Checkpoint struct {
	path  string
	dir   string            // folder of the shards
	shard map[string]string // tensor name -> shard file name

	mu     sync.Mutex       // guards files and sorted, which fill lazily
	files  map[string]*File // shard file name -> open file
	sorted []string
}

// OpenCheckpoint opens path as described on Checkpoint.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.IsDir() {
		idx := filepath.Join(path, IndexFileName)
		if _, err := os.Stat(idx); err == nil {
			return openIndex(idx)
		}
		shards, _ := filepath.Glob(filepath.Join(path, "*.safetensors"))
		if len(shards) == 0 {
			return nil, fmt.Errorf("safetensors: folder %s holds neither %s nor *.safetensors files", path, IndexFileName)
		}
		return openFiles(path, shards)
	}
	if strings.HasSuffix(path, ".json") {
		return openIndex(path)
	}
	return openFiles(path, []string{path})
}

func openFiles(path string, paths []string) (*Checkpoint, error) {
	c := &Checkpoint{path: path, shard: map[string]string{}, files: map[string]*File{}}
	for _, p := range paths {
		f, err := Open(p)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.files[p] = f
		for _, n := range f.names {
			if prev, dup := c.shard[n]; dup {
				c.Close()
				return nil, fmt.Errorf("safetensors: tensor %q is in both %s and %s", n, prev, p)
			}
			c.shard[n] = p
		}
	}
	return c, nil
}

func openIndex(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("safetensors: index %s: %v", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors: index %s has no weight_map entries", path)
	}
	dir := filepath.Dir(path)
	c := &Checkpoint{path: path, dir: dir, shard: map[string]string{}, files: map[string]*File{}}
	for name, file := range idx.WeightMap {
		if file == "" || filepath.Base(file) != file {
			return nil, fmt.Errorf("safetensors: index %s: tensor %q maps to %q, want a file name in the index's folder", path, name, file)
		}
		c.shard[name] = filepath.Join(dir, file)
	}
	return c, nil
}

// Close closes every opened shard.
func (c *Checkpoint) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for _, f := range c.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Path is the path given to OpenCheckpoint.
func (c *Checkpoint) Path() string { return c.path }

// Names lists every tensor name in sorted order.
func (c *Checkpoint) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sorted == nil {
		for n := range c.shard {
			c.sorted = append(c.sorted, n)
		}
		sort.Strings(c.sorted)
	}
	return append([]string(nil), c.sorted...)
}

// Has reports whether the checkpoint lists name.
func (c *Checkpoint) Has(name string) bool { _, ok := c.shard[name]; return ok }

func (c *Checkpoint) file(name string) (*File, error) {
	p, ok := c.shard[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: %w: %q", c.path, ErrNotFound, name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.files[p]; f != nil {
		return f, nil
	}
	f, err := Open(p)
	if err != nil {
		return nil, err
	}
	c.files[p] = f
	if _, ok := f.tensors[name]; !ok {
		return nil, fmt.Errorf("safetensors: index %s maps %q to %s, which does not hold it", c.path, name, p)
	}
	return f, nil
}

// Info describes a tensor.
func (c *Checkpoint) Info(name string) (TensorInfo, error) {
	f, err := c.file(name)
	if err != nil {
		return TensorInfo{}, err
	}
	t, ok := f.Info(name)
	if !ok {
		return TensorInfo{}, fmt.Errorf("safetensors: %s does not hold %q", f.name, name)
	}
	return t, nil
}

// ReadFloat64 reads a floating-point tensor widened (or kept) to float64.
func (c *Checkpoint) ReadFloat64(name string) ([]float64, []int, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, nil, err
	}
	return f.ReadFloat64(name)
}

// ReadFloat32 reads a floating-point tensor as float32 (F64 rounded).
func (c *Checkpoint) ReadFloat32(name string) ([]float32, []int, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, nil, err
	}
	return f.ReadFloat32(name)
}

// ReadBF16 reads a floating-point tensor as bfloat16 (BF16 bytes as they are; see File.ReadBF16).
func (c *Checkpoint) ReadBF16(name string) ([]bf16.BFloat16, []int, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, nil, err
	}
	return f.ReadBF16(name)
}

// elem is an element type LoadMixtral reads into.
type elem interface {
	~float32 | ~float64 | bf16.BFloat16
}

// readAs reads a tensor as []T.
func readAs[T elem](c *Checkpoint, name string) ([]T, []int, error) {
	var zero T
	switch any(zero).(type) {
	case float32:
		v, s, err := c.ReadFloat32(name)
		return any(v).([]T), s, err
	case bf16.BFloat16:
		v, s, err := c.ReadBF16(name)
		return any(v).([]T), s, err
	default:
		v, s, err := c.ReadFloat64(name)
		return any(v).([]T), s, err
	}
}
