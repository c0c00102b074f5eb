package main

import (
	"errors"
	"fmt"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writeTrainingPlot writes a PNG to path with the training curves over steps (x = step, 1-based):
// a panel with loss[step], a panel with the load-balancing loss aux[step] when aux is non-empty, one
// with the router z-loss z[step] when z is non-empty, and a panel with one line per expert of
// load[step][expert] (all rows of load must have the same length). Non-finite values are left out of
// the lines rather than failing the plot. Rows are stacked vertically in one image.
func writeTrainingPlot(path string, loss, aux, z []float64, load [][]float64) error {
	if len(loss) == 0 && len(aux) == 0 && len(z) == 0 && len(load) == 0 {
		return errors.New("plot: nothing to plot (no loss, aux, z or load values)")
	}
	var panels []*plot.Plot

	if len(loss) > 0 {
		p, err := curvePlot("Training loss", "loss", []string{"loss"}, [][]float64{loss})
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(aux) > 0 {
		p, err := curvePlot("Auxiliary (load-balancing) loss", "aux loss", []string{"aux"}, [][]float64{aux})
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(z) > 0 {
		p, err := curvePlot("Router z-loss", "z-loss", []string{"z"}, [][]float64{z})
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(load) > 0 {
		experts := len(load[0])
		if experts == 0 {
			return errors.New("plot: load rows are empty (no experts)")
		}
		series := make([][]float64, experts)
		names := make([]string, experts)
		for e := range series {
			series[e] = make([]float64, len(load))
			names[e] = fmt.Sprintf("expert %d", e)
		}
		for s, row := range load {
			if len(row) != experts {
				return fmt.Errorf("plot: load row %d has %d experts, row 0 has %d", s, len(row), experts)
			}
			for e, v := range row {
				series[e][s] = v
			}
		}
		p, err := curvePlot("Per-expert load", "load", names, series)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}

	const width = 8 * vg.Inch
	rowHeight := 3 * vg.Inch
	img := vgimg.New(width, rowHeight*vg.Length(len(panels)))
	dc := draw.New(img)
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4)}
	canvases := plot.Align(grid, tiles, dc)
	for i := range panels {
		panels[i].Draw(canvases[i][0])
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// curvePlot makes one panel with a line per series against the 1-based step.
func curvePlot(title, ylabel string, names []string, series [][]float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	for i, ys := range series {
		pts := make(plotter.XYs, 0, len(ys))
		for s, y := range ys {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(s + 1), Y: y})
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("plot: %s: %w", names[i], err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.2)
		p.Add(l)
		if len(series) > 1 || names[i] != ylabel {
			p.Legend.Add(names[i], l)
		}
	}
	return p, nil
}
