#include "plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

namespace mnist_bn {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

// A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about n ticks.
double nice_step(double range, int n) {
  const double raw = range / n;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

void render_panel(std::ostringstream& o, const Chart& c, double y0, double width, double height, int id,
                  bool legend) {
  const double left = 70, right = 250, top = y0 + 40, bottom = 50;
  const double pw = width - left - right, ph = height - 40 - bottom;
  auto sx = [&](double x) {
    if (c.x_log) return left + std::log(x / c.x_min) / std::log(c.x_max / c.x_min) * pw;
    return left + (x - c.x_min) / (c.x_max - c.x_min) * pw;
  };
  auto sy = [&](double y) { return top + (1.0 - (y - c.y_min) / (c.y_max - c.y_min)) * ph; };

  o << "<text x=\"" << width / 2 << "\" y=\"" << y0 + 24 << "\" text-anchor=\"middle\" font-size=\"14\">"
    << escape(c.title) << "</text>\n";
  // Grid and tick labels.
  for (double y = std::ceil(c.y_min / c.y_tick - 1e-9) * c.y_tick; y <= c.y_max + 1e-9; y += c.y_tick) {
    o << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << fmt("%.1f", sy(y)) << "\" y2=\""
      << fmt("%.1f", sy(y)) << "\" stroke=\"#e0e0e0\"/>\n";
    o << "<text x=\"" << left - 6 << "\" y=\"" << fmt("%.1f", sy(y) + 4) << "\" text-anchor=\"end\">"
      << (c.y_percent ? fmt("%.0f%%", std::round(y * 100) + 0.0) : fmt("%g", y)) << "</text>\n";
  }
  std::vector<double> x_ticks;
  if (c.x_log) {
    // 1, 2 and 5 times each power of ten.
    for (double p = std::pow(10.0, std::floor(std::log10(c.x_min))); p <= c.x_max; p *= 10)
      for (double m : {1.0, 2.0, 5.0})
        if (m * p >= c.x_min * (1 - 1e-9) && m * p <= c.x_max * (1 + 1e-9)) x_ticks.push_back(m * p);
  } else {
    const double xs = nice_step(c.x_max - c.x_min, 8);
    for (double x = std::ceil(c.x_min / xs) * xs; x <= c.x_max + 1e-9; x += xs) x_ticks.push_back(x);
  }
  for (double x : x_ticks) {
    o << "<line x1=\"" << fmt("%.1f", sx(x)) << "\" x2=\"" << fmt("%.1f", sx(x)) << "\" y1=\"" << top
      << "\" y2=\"" << top + ph << "\" stroke=\"#e0e0e0\"/>\n";
    o << "<text x=\"" << fmt("%.1f", sx(x)) << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">"
      << fmt("%g", x) << "</text>\n";
  }
  for (double m : c.y_marks) {
    if (m < c.y_min || m > c.y_max) continue;
    o << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << fmt("%.1f", sy(m)) << "\" y2=\""
      << fmt("%.1f", sy(m)) << "\" stroke=\"#666\" stroke-dasharray=\"2,3\"/>\n";
  }
  o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"#333\"/>\n";
  o << "<text x=\"" << left + pw / 2 << "\" y=\"" << top + ph + 36 << "\" text-anchor=\"middle\">"
    << escape(c.x_label) << "</text>\n";
  o << "<text transform=\"translate(18," << top + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << escape(c.y_label) << "</text>\n";

  // Curves, clipped to the plot area.
  o << "<clipPath id=\"plot" << id << "\"><rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw
    << "\" height=\"" << ph << "\"/></clipPath>\n<g clip-path=\"url(#plot" << id
    << ")\" fill=\"none\" stroke-width=\"1.6\">\n";
  for (const Series& s : c.series) {
    if (s.x.empty()) continue;
    o << "<polyline stroke=\"" << s.color << "\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "")
      << " points=\"";
    // Points outside the y range are drawn just outside it (clipped away),
    // not pinned to the border.
    const double lo = c.y_min - 0.02 * (c.y_max - c.y_min), hi = c.y_max + 0.02 * (c.y_max - c.y_min);
    bool first = true;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (c.x_log && !(s.x[i] > 0)) continue;
      o << (first ? "" : " ") << fmt("%.1f", sx(s.x[i])) << ','
        << fmt("%.1f", sy(std::clamp(s.y[i], lo, hi)));
      first = false;
    }
    o << "\"><title>" << escape(s.label) << "</title></polyline>\n";
    if (s.diverged && s.y.back() >= c.y_min && s.y.back() <= c.y_max && (!c.x_log || s.x.back() > 0)) {
      const double x = sx(s.x.back()), y = sy(s.y.back());
      o << "<path d=\"M" << fmt("%.1f", x - 5) << ',' << fmt("%.1f", y - 5)
        << " l10,10 m0,-10 l-10,10\" stroke=\"" << s.color << "\" stroke-width=\"2.5\"/>\n";
    }
  }
  o << "</g>\n";

  if (!legend) return;
  const double lx = left + pw + 16;
  double ly = top + 8;
  for (const Series& s : c.series) {
    o << "<line x1=\"" << lx << "\" x2=\"" << lx + 28 << "\" y1=\"" << ly << "\" y2=\"" << ly
      << "\" stroke=\"" << s.color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "")
      << "/>\n";
    o << "<text x=\"" << lx + 34 << "\" y=\"" << ly + 4 << "\">" << escape(s.label)
      << (s.diverged ? " (diverged)" : "") << "</text>\n";
    ly += 18;
  }
}

}  // namespace

std::string render_svg(const std::vector<Chart>& charts) {
  const double width = 980, panel_height = 430;
  const double height = panel_height * static_cast<double>(charts.size());
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (std::size_t i = 0; i < charts.size(); ++i)
    render_panel(o, charts[i], panel_height * static_cast<double>(i), width, panel_height,
                 static_cast<int>(i), i == 0);
  o << "</svg>\n";
  return o.str();
}

}  // namespace mnist_bn
