// Package hf reads and writes safetensors files and maps Hugging Face Mixtral MoE weight names to the
// layouts of this project's moe layer.
//
// Safetensors format: an 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON (an object
// mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
// "__metadata__" object of string values), then the data section; offsets are relative to the start of
// the data section, data are little-endian and row-major (C order).
//
// The reader reads only the header when a file is opened and then each tensor on request with ReadAt,
// so one layer can be taken from a multi-gigabyte checkpoint shard without reading the rest. Every offset,
// size and dtype is validated against the header and the file size: a corrupt or truncated file gives an
// error naming the file and the problem, never a panic.
package hf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/expertrt/expertrt-go/internal/bf16"
)

// DType is a safetensors element type name as it appears in the header ("F32", "BF16", ...).
type DType string

// Element types. Only the floating-point ones can be decoded to float32/float64 by this package; the
// others are recognised (sizes are validated) but reading them as floats is an error.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U64  DType = "U64"
	U32  DType = "U32"
	U16  DType = "U16"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size returns the element size in bytes, or 0 for an unknown type. (Sub-byte and FP8 types are
// not supported and report 0.)
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// IsFloat reports whether values of this type can be read as float32/float64.
func (d DType) IsFloat() bool { return d == F64 || d == F32 || d == F16 || d == BF16 }

// ParseDType accepts a dtype name, case-insensitively, also in the spellings "float64", "float32",
// "float16" and "bfloat16".
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "f64", "float64":
		return F64, nil
	case "f32", "float32":
		return F32, nil
	case "f16", "float16":
		return F16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	}
	d := DType(strings.ToUpper(s))
	if d.Size() == 0 {
		return "", fmt.Errorf("safetensors: unknown dtype %q", s)
	}
	return d, nil
}

// MaxHeaderSize bounds the JSON header (the reference implementation uses the same 100 MB limit).
const MaxHeaderSize = 100 << 20

// TensorInfo describes one tensor of a file. Begin and End are byte offsets relative to the start of
// the data section.
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64
}

// NumElements is the product of Shape (1 for a scalar of shape []).
func (t TensorInfo) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an open safetensors file (or any io.ReaderAt holding one). Methods are safe for concurrent
// use when the underlying ReaderAt is.
type File struct {
	name      string // for error messages
	r         io.ReaderAt
	closer    io.Closer
	dataStart int64
	dataLen   int64
	tensors   map[string]TensorInfo
	names     []string
	metadata  map[string]string
}

// Open opens a safetensors file and validates its header. Close it when done.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("safetensors: %s is a directory", path)
	}
	sf, err := newFile(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	sf.closer = f
	return sf, nil
}

// NewReader validates the header of a safetensors image of size bytes held by r. name is used in
// error messages only.
func NewReader(name string, r io.ReaderAt, size int64) (*File, error) {
	return newFile(name, r, size)
}

// Parse validates an in-memory safetensors image.
func Parse(name string, b []byte) (*File, error) {
	return newFile(name, bytes.NewReader(b), int64(len(b)))
}

// Close closes the underlying file (if Open opened it).
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	c := f.closer
	f.closer = nil
	return c.Close()
}

// Name is the path or name given when the file was opened.
func (f *File) Name() string { return f.name }

// Names lists the tensor names in sorted order.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Metadata returns the "__metadata__" map (nil if absent).
func (f *File) Metadata() map[string]string { return f.metadata }

// Info returns the description of a tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	t, ok := f.tensors[name]
	if ok {
		t.Shape = append([]int(nil), t.Shape...)
	}
	return t, ok
}

type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func newFile(name string, r io.ReaderAt, size int64) (*File, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("safetensors: %s: "+format, append([]any{name}, a...)...)
	}
	if size < 8 {
		return nil, fail("file is %d bytes, too short for the 8-byte header length (truncated or not a safetensors file)", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fail("reading header length: %v", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n < 2 {
		return nil, fail("header length %d is too small for a JSON object", n)
	}
	if n > MaxHeaderSize {
		return nil, fail("header length %d exceeds the %d-byte limit (corrupt or not a safetensors file)", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, fail("header length %d exceeds the %d bytes after the length field (truncated file)", n, size-8)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fail("reading header: %v", err)
	}
	if !utf8.Valid(hdr) {
		return nil, fail("header is not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&raw); err != nil {
		return nil, fail("header is not a JSON object: %v", err)
	}
	// Only trailing whitespace (the writers pad with spaces) may follow the object.
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) != 0 {
		return nil, fail("header has data after the JSON object")
	}
	if raw == nil {
		return nil, fail("header is JSON null, want an object")
	}
	sf := &File{
		name:      name,
		r:         r,
		dataStart: 8 + int64(n),
		dataLen:   size - 8 - int64(n),
		tensors:   make(map[string]TensorInfo, len(raw)),
	}
	for key, val := range raw {
		if key == "__metadata__" {
			if err := json.Unmarshal(val, &sf.metadata); err != nil {
				return nil, fail("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(val, &e); err != nil {
			return nil, fail("tensor %q: bad header entry: %v", key, err)
		}
		if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
			return nil, fail("tensor %q: header entry needs dtype, shape and data_offsets", key)
		}
		dt := DType(*e.DType)
		if dt.Size() == 0 {
			return nil, fail("tensor %q: unsupported dtype %q", key, *e.DType)
		}
		if len(*e.DataOffsets) != 2 {
			return nil, fail("tensor %q: data_offsets must have 2 entries, got %d", key, len(*e.DataOffsets))
		}
		begin, end := (*e.DataOffsets)[0], (*e.DataOffsets)[1]
		if begin < 0 || end < begin {
			return nil, fail("tensor %q: bad data_offsets [%d, %d]", key, begin, end)
		}
		shape := make([]int, len(*e.Shape))
		elems := int64(1)
		for i, d := range *e.Shape {
			if d < 0 {
				return nil, fail("tensor %q: negative dimension %d in shape %v", key, d, *e.Shape)
			}
			if d > 0 && elems > math.MaxInt64/8/d {
				return nil, fail("tensor %q: shape %v overflows", key, *e.Shape)
			}
			elems *= d
			shape[i] = int(d)
		}
		if want := elems * int64(dt.Size()); end-begin != want {
			return nil, fail("tensor %q: data_offsets [%d, %d] hold %d bytes, but %s%v needs %d", key, begin, end, end-begin, dt, *e.Shape, want)
		}
		if end > sf.dataLen {
			return nil, fail("tensor %q: data ends at byte %d of the data section, which has only %d bytes (truncated file)", key, end, sf.dataLen)
		}
		sf.tensors[key] = TensorInfo{Name: key, DType: dt, Shape: shape, Begin: begin, End: end}
		sf.names = append(sf.names, key)
	}
	sort.Strings(sf.names)
	// Tensors must not overlap.
	byOffset := make([]TensorInfo, 0, len(sf.tensors))
	for _, t := range sf.tensors {
		if t.End > t.Begin {
			byOffset = append(byOffset, t)
		}
	}
	sort.Slice(byOffset, func(i, j int) bool { return byOffset[i].Begin < byOffset[j].Begin })
	for i := 1; i < len(byOffset); i++ {
		if byOffset[i].Begin < byOffset[i-1].End {
			return nil, fail("tensors %q and %q overlap in the data section", byOffset[i-1].Name, byOffset[i].Name)
		}
	}
	return sf, nil
}

// ReadRaw returns the little-endian bytes of a tensor.
func (f *File) ReadRaw(name string) ([]byte, TensorInfo, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, TensorInfo{}, fmt.Errorf("safetensors: %s: no tensor %q", f.name, name)
	}
	buf := make([]byte, t.End-t.Begin)
	if len(buf) > 0 {
		if _, err := f.r.ReadAt(buf, f.dataStart+t.Begin); err != nil {
			return nil, t, fmt.Errorf("safetensors: %s: reading tensor %q: %w", f.name, name, err)
		}
	}
	t.Shape = append([]int(nil), t.Shape...)
	return buf, t, nil
}

// ReadFloat64 reads a floating-point tensor (F64, F32, F16 or BF16; narrower types are widened
// exactly) and returns its row-major values and shape.
func (f *File) ReadFloat64(name string) ([]float64, []int, error) {
	raw, t, err := f.ReadRaw(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float64, t.NumElements())
	if err := decode(raw, t.DType, out); err != nil {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: %w", f.name, name, err)
	}
	return out, t.Shape, nil
}

// ReadBF16 reads a floating-point tensor as bfloat16: BF16 bytes as they are (no widening, no
// rounding), F32 and F16 rounded once to the nearest bfloat16, F64 rounded once (not through float32).
func (f *File) ReadBF16(name string) ([]bf16.BFloat16, []int, error) {
	raw, t, err := f.ReadRaw(name)
	if err != nil {
		return nil, nil, err
	}
	if !t.DType.IsFloat() {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: dtype %s is not a floating-point type", f.name, name, t.DType)
	}
	n := t.NumElements()
	if len(raw) != n*t.DType.Size() {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: %d bytes for %d %s values", f.name, name, len(raw), n, t.DType)
	}
	out := make([]bf16.BFloat16, n)
	le := binary.LittleEndian
	switch t.DType {
	case BF16:
		for i := range out {
			out[i] = bf16.BFloat16(le.Uint16(raw[2*i:]))
		}
	case F64:
		for i := range out {
			out[i] = bf16.FromFloat64(math.Float64frombits(le.Uint64(raw[8*i:])))
		}
	case F32:
		for i := range out {
			out[i] = bf16.FromFloat32(math.Float32frombits(le.Uint32(raw[4*i:])))
		}
	case F16:
		for i := range out {
			out[i] = bf16.FromFloat32(F16ToFloat32(le.Uint16(raw[2*i:])))
		}
	}
	return out, t.Shape, nil
}

// ReadFloat32 reads a floating-point tensor as float32: F32, F16 and BF16 exactly, F64 rounded to the
// nearest float32.
func (f *File) ReadFloat32(name string) ([]float32, []int, error) {
	raw, t, err := f.ReadRaw(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, t.NumElements())
	if err := decode(raw, t.DType, out); err != nil {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: %w", f.name, name, err)
	}
	return out, t.Shape, nil
}

type float interface{ ~float32 | ~float64 }

// decode converts little-endian raw values of type dt into dst (len(dst) elements).
func decode[T float](raw []byte, dt DType, dst []T) error {
	if !dt.IsFloat() {
		return fmt.Errorf("dtype %s is not a floating-point type", dt)
	}
	if len(raw) != len(dst)*dt.Size() {
		return fmt.Errorf("%d bytes for %d %s values", len(raw), len(dst), dt)
	}
	le := binary.LittleEndian
	switch dt {
	case F64:
		for i := range dst {
			dst[i] = T(math.Float64frombits(le.Uint64(raw[8*i:])))
		}
	case F32:
		for i := range dst {
			dst[i] = T(math.Float32frombits(le.Uint32(raw[4*i:])))
		}
	case BF16:
		for i := range dst {
			dst[i] = T(BF16ToFloat32(le.Uint16(raw[2*i:])))
		}
	case F16:
		for i := range dst {
			dst[i] = T(F16ToFloat32(le.Uint16(raw[2*i:])))
		}
	}
	return nil
}

// BF16ToFloat32 widens a bfloat16 bit pattern exactly (bf16.BFloat16.Float32).
func BF16ToFloat32(b uint16) float32 { return bf16.BFloat16(b).Float32() }

// Float32ToBF16 rounds to the nearest bfloat16, ties to even; NaN stays NaN (quiet), infinities stay
// (bf16.FromFloat32).
func Float32ToBF16(f float32) uint16 { return uint16(bf16.FromFloat32(f)) }

// F16ToFloat32 widens an IEEE binary16 bit pattern exactly (subnormals, infinities and NaN included).
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		// zero or subnormal: value = man * 2^-24
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// ReadInt64 reads an integer tensor (I64, I32, I16, I8, U32, U16 or U8; widened exactly) and returns
// its row-major values and shape. U64 values above 2^63-1 are an error.
func (f *File) ReadInt64(name string) ([]int64, []int, error) {
	raw, t, err := f.ReadRaw(name)
	if err != nil {
		return nil, nil, err
	}
	n := t.NumElements()
	if t.DType.IsFloat() || t.DType == Bool || len(raw) != n*t.DType.Size() {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q has dtype %s, want an integer type", f.name, name, t.DType)
	}
	le := binary.LittleEndian
	out := make([]int64, n)
	for i := range out {
		switch t.DType {
		case I64:
			out[i] = int64(le.Uint64(raw[8*i:]))
		case U64:
			u := le.Uint64(raw[8*i:])
			if u > math.MaxInt64 {
				return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: value %d does not fit an int64", f.name, name, u)
			}
			out[i] = int64(u)
		case I32:
			out[i] = int64(int32(le.Uint32(raw[4*i:])))
		case U32:
			out[i] = int64(le.Uint32(raw[4*i:]))
		case I16:
			out[i] = int64(int16(le.Uint16(raw[2*i:])))
		case U16:
			out[i] = int64(le.Uint16(raw[2*i:]))
		case I8:
			out[i] = int64(int8(raw[i]))
		case U8:
			out[i] = int64(raw[i])
		}
	}
	return out, t.Shape, nil
}

// Tensor is a tensor to write. Values must be []float64, []float32 or []bf16.BFloat16 (stored as F64, F32
// or BF16; F32 when DType is empty; values are rounded once where the stored type is narrower, float64
// to BF16 directly, not through float32; bfloat16 values stored as BF16 are written as they are) or
// []int32 or []int64 (stored as I32 or I64; the values' own type when DType is empty; int64 values must
// fit an int32 when stored as I32), with the product of Shape elements.
type Tensor struct {
	Name   string
	Shape  []int
	Values any
	DType  DType
}

func encodedSize(t Tensor) (int, DType, error) {
	dt := t.DType
	if dt == "" {
		switch t.Values.(type) {
		case []int32:
			dt = I32
		case []int64:
			dt = I64
		default:
			dt = F32
		}
	}
	var intValues bool
	switch t.Values.(type) {
	case []int32, []int64:
		intValues = true
	}
	switch {
	case dt != F64 && dt != F32 && dt != BF16 && dt != I32 && dt != I64:
		return 0, "", fmt.Errorf("safetensors: tensor %q: writing dtype %q is not supported (F64, F32, BF16, I64, I32)", t.Name, dt)
	case intValues != (dt == I32 || dt == I64):
		return 0, "", fmt.Errorf("safetensors: tensor %q: values of type %T cannot be stored as %s", t.Name, t.Values, dt)
	}
	if v, ok := t.Values.([]int64); ok && dt == I32 {
		for _, x := range v {
			if x != int64(int32(x)) {
				return 0, "", fmt.Errorf("safetensors: tensor %q: value %d does not fit I32", t.Name, x)
			}
		}
	}
	n := 1
	for _, d := range t.Shape {
		if d < 0 {
			return 0, "", fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		n *= d
	}
	var have int
	switch v := t.Values.(type) {
	case []float64:
		have = len(v)
	case []float32:
		have = len(v)
	case []bf16.BFloat16:
		have = len(v)
	case []int32:
		have = len(v)
	case []int64:
		have = len(v)
	default:
		return 0, "", fmt.Errorf("safetensors: tensor %q: values of type %T, want []float64, []float32, []bf16.BFloat16, []int32 or []int64", t.Name, t.Values)
	}
	if have != n {
		return 0, "", fmt.Errorf("safetensors: tensor %q: %d values for shape %v (%d elements)", t.Name, have, t.Shape, n)
	}
	return n * dt.Size(), dt, nil
}

// Write writes tensors (in name order, data contiguous, header padded with spaces to a multiple of 8
// bytes as the reference implementation does) and optional metadata to w. Names must be unique and
// non-empty and must not be "__metadata__".
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	ts := append([]Tensor(nil), tensors...)
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	header := make(map[string]any, len(ts)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	type entry struct {
		DType       DType   `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	dtypes := make([]DType, len(ts))
	var off int64
	for i, t := range ts {
		if t.Name == "" || t.Name == "__metadata__" {
			return fmt.Errorf("safetensors: invalid tensor name %q", t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return fmt.Errorf("safetensors: duplicate tensor name %q", t.Name)
		}
		size, dt, err := encodedSize(t)
		if err != nil {
			return err
		}
		dtypes[i] = dt
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = entry{DType: dt, Shape: shape, DataOffsets: []int64{off, off + int64(size)}}
		off += int64(size)
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encoding header: %w", err)
	}
	if pad := (8 - len(hdr)%8) % 8; pad > 0 {
		hdr = append(hdr, bytes.Repeat([]byte{' '}, pad)...)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	bw.Write(lenBuf[:])
	bw.Write(hdr)
	var scratch [8]byte
	le := binary.LittleEndian
	for i, t := range ts {
		dt := dtypes[i]
		put := func(v float64) {
			switch dt {
			case F64:
				le.PutUint64(scratch[:], math.Float64bits(v))
				bw.Write(scratch[:8])
			case F32:
				le.PutUint32(scratch[:], math.Float32bits(float32(v)))
				bw.Write(scratch[:4])
			case BF16:
				le.PutUint16(scratch[:], uint16(bf16.FromFloat64(v))) // one rounding
				bw.Write(scratch[:2])
			}
		}
		switch v := t.Values.(type) {
		case []float64:
			for _, x := range v {
				put(x)
			}
		case []float32:
			for _, x := range v {
				put(float64(x)) // exact; float32(float64(x)) == x
			}
		case []bf16.BFloat16:
			for _, x := range v {
				if dt == BF16 {
					le.PutUint16(scratch[:], uint16(x))
					bw.Write(scratch[:2])
					continue
				}
				put(x.Float64()) // exact
			}
		case []int32:
			for _, x := range v {
				putInt(bw, dt, int64(x))
			}
		case []int64:
			for _, x := range v {
				putInt(bw, dt, x)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}

// putInt writes x as a little-endian I32 or I64 value (the range was checked by encodedSize).
func putInt(bw *bufio.Writer, dt DType, x int64) {
	var b [8]byte
	if dt == I32 {
		binary.LittleEndian.PutUint32(b[:], uint32(int32(x)))
		bw.Write(b[:4])
		return
	}
	binary.LittleEndian.PutUint64(b[:], uint64(x))
	bw.Write(b[:])
}

// WriteFile writes tensors to path atomically: to a temporary file in the same folder, renamed over
// path once complete.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = Write(tmp, tensors, metadata); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
