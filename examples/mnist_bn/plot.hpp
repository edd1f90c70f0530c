// A line chart as a self-contained SVG file (no plotting library needed).
#pragma once

#include <string>
#include <vector>

namespace mnist_bn {

struct Series {
  std::string label;
  std::string color;  ///< any SVG colour, e.g. "#1f77b4"
  bool dashed = false;
  std::vector<double> x, y;
  bool diverged = false;  ///< draw an x at the last point
};

struct Chart {
  std::string title, x_label, y_label;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  bool x_log = false;           ///< logarithmic x axis (x_min > 0; points at x <= 0 are left out)
  double y_tick = 0.1;          ///< spacing of the horizontal grid lines
  bool y_percent = true;        ///< y tick labels as percentages
  std::vector<double> y_marks;  ///< dotted horizontal reference lines (targets)
  std::vector<Series> series;
};

/// Charts stacked top to bottom in one SVG: axes, grid, one polyline per
/// series; the legend (of the first chart's series) beside the first.
std::string render_svg(const std::vector<Chart>& charts);

}  // namespace mnist_bn
