#include "cli/quant_plot.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace jetmoe::cli {
namespace {

struct Panel {
  double x0, y0, w, h;  // plot area in SVG units
  double xmin, xmax, ymin, ymax;
  double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * w; }
  double py(double y) const { return y0 + h - (y - ymin) / (ymax - ymin) * h; }
};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

void axes(std::ostringstream& s, const Panel& p, const std::string& xlabel, const std::string& ylabel) {
  s << "<rect x='" << p.x0 << "' y='" << p.y0 << "' width='" << p.w << "' height='" << p.h
    << "' fill='none' stroke='#333'/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double xv = p.xmin + (p.xmax - p.xmin) * i / 4, yv = p.ymin + (p.ymax - p.ymin) * i / 4;
    s << "<text x='" << p.px(xv) << "' y='" << p.y0 + p.h + 16 << "' font-size='11' text-anchor='middle'>" << num(xv) << "</text>\n";
    s << "<text x='" << p.x0 - 6 << "' y='" << p.py(yv) + 4 << "' font-size='11' text-anchor='end'>" << num(yv) << "</text>\n";
    s << "<line x1='" << p.x0 << "' x2='" << p.x0 + p.w << "' y1='" << p.py(yv) << "' y2='" << p.py(yv)
      << "' stroke='#ddd'/>\n";
  }
  s << "<text x='" << p.x0 + p.w / 2 << "' y='" << p.y0 + p.h + 34 << "' font-size='12' text-anchor='middle'>" << xlabel << "</text>\n";
  s << "<text transform='translate(" << p.x0 - 48 << "," << p.y0 + p.h / 2 << ") rotate(-90)' font-size='12' text-anchor='middle'>"
    << ylabel << "</text>\n";
}

}  // namespace

std::string quant_plot_svg(const nlohmann::json& rows) {
  double kmax = 0, smax = 0, tmax = 0;
  for (const auto& r : rows) {
    kmax = std::max(kmax, r["kld_mean"].get<double>());
    smax = std::max(smax, r["weights_bytes"].get<double>() / 1048576.0);
    tmax = std::max(tmax, r["decode_tps"].get<double>());
  }
  kmax = kmax > 0 ? kmax * 1.15 : 1.0;
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='900' height='380' font-family='sans-serif'>\n"
    << "<rect width='900' height='380' fill='white'/>\n"
    << "<text x='450' y='22' font-size='15' text-anchor='middle'>Quantization: mean KL-divergence vs full precision</text>\n";
  const Panel a{80, 40, 340, 270, 0, smax * 1.1, 0, kmax};
  const Panel b{530, 40, 340, 270, 0, tmax * 1.1, 0, kmax};
  axes(s, a, "weights (MiB)", "mean KLD");
  axes(s, b, "decode tokens/s", "mean KLD");
  for (const auto& r : rows) {
    const std::string t = r["type"].get<std::string>();
    const double k = r["kld_mean"].get<double>();
    for (const auto& [p, x] : {std::pair{a, r["weights_bytes"].get<double>() / 1048576.0}, std::pair{b, r["decode_tps"].get<double>()}}) {
      s << "<circle cx='" << p.px(x) << "' cy='" << p.py(k) << "' r='5' fill='#1f77b4'/>\n";
      s << "<text x='" << p.px(x) + 8 << "' y='" << p.py(k) - 6 << "' font-size='11'>" << t << "</text>\n";
    }
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace jetmoe::cli
