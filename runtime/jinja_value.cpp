#include "runtime/jinja_value.h"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace jetmoe::jinja {

double Value::as_double() const {
  if (is_bool()) return std::get<bool>(v) ? 1.0 : 0.0;
  if (is_int()) return static_cast<double>(std::get<int64_t>(v));
  return std::get<double>(v);
}

bool Value::truthy() const {
  return std::visit(
      [](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, std::nullptr_t>) {
          return false;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x;
        } else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) {
          return x != 0;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return !x.empty();
        } else {
          return !x->empty();
        }
      },
      v);
}

namespace {

std::string format_double(double d) {
  // Python prints floats with the shortest round-tripping form and always a '.0' for integers.
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  // Python repr() of a str: single quotes unless the text contains one and no double quote.
  const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c == q) out += '\\';
        out += c;
    }
  }
  out += q;
  return out;
}

}  // namespace

std::string Value::to_output() const {
  if (is_undefined()) return "";
  if (is_string()) return str();
  return repr();
}

std::string Value::repr() const {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined>) {
          return "";
        } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return "None";
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "True" : "False";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          return format_double(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return quote(x);
        } else if constexpr (std::is_same_v<T, std::shared_ptr<const List>>) {
          std::string out = "[";
          for (size_t i = 0; i < x->size(); ++i) out += (i ? ", " : "") + (*x)[i].repr();
          return out + "]";
        } else {
          std::string out = "{";
          bool first = true;
          for (const auto& [k, val] : *x) {
            out += (first ? "" : ", ") + quote(k) + ": " + val.repr();
            first = false;
          }
          return out + "}";
        }
      },
      v);
}

const char* Value::type_name() const {
  static constexpr const char* names[] = {"undefined", "none",   "bool", "int",
                                          "float",     "string", "list", "dict"};
  return names[v.index()];
}

Value Value::from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value(nullptr);
    case nlohmann::json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Map m;
      for (const auto& [k, e] : j.items()) m.emplace(k, from_json(e));
      return Value(std::move(m));
    }
    default: return Value(nullptr);  // binary / discarded: nothing a template can use
  }
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_double() || b.is_double()) return a.as_double() == b.as_double();
    auto as_int = [](const Value& x) {
      return x.is_bool() ? int64_t{std::get<bool>(x.v)} : std::get<int64_t>(x.v);
    };
    return as_int(a) == as_int(b);
  }
  if (a.v.index() != b.v.index()) return false;
  if (a.is_string()) return a.str() == b.str();
  if (a.is_list()) {
    const List &x = a.list(), &y = b.list();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equals(x[i], y[i])) return false;
    return true;
  }
  if (a.is_map()) {
    const Map &x = a.map(), &y = b.map();
    if (x.size() != y.size()) return false;
    for (auto ix = x.begin(), iy = y.begin(); ix != x.end(); ++ix, ++iy)
      if (ix->first != iy->first || !equals(ix->second, iy->second)) return false;
    return true;
  }
  return true;  // undefined == undefined, none == none
}

}  // namespace jetmoe::jinja
