#include "runtime/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace jetmoe::jinja {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw BuiltinError(msg); }

void check_string(const std::string& s, const RenderLimits& limits) {
  if (s.size() > limits.max_output_bytes)
    fail("string grew past the limit of " + std::to_string(limits.max_output_bytes) + " bytes");
}
void check_list(size_t n, const RenderLimits& limits) {
  if (n > limits.max_list_items)
    fail("list grew past the limit of " + std::to_string(limits.max_list_items) + " items");
}

int64_t as_int(const Value& v) {
  if (v.is_bool()) return std::get<bool>(v.v) ? 1 : 0;
  if (v.is_int()) return std::get<int64_t>(v.v);
  fail(std::string("expected an integer, got ") + v.type_name());
}

const std::string& as_string(const Value& v, const char* what) {
  if (!v.is_string()) fail(std::string(what) + " expects a string, got " + v.type_name());
  return v.str();
}

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  fail("unsupported operand types for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool is_ws(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto drop = [&](char c) {
    return chars && chars->is_string() ? chars->str().find(c) != std::string::npos : is_ws(c);
  };
  size_t b = 0, e = s.size();
  if (left) while (b < e && drop(s[b])) ++b;
  if (right) while (e > b && drop(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Case mapping is ASCII-only; non-ASCII UTF-8 bytes pass through unchanged.
std::string map_chars(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}
std::string capitalize(const std::string& s) {
  std::string out = map_chars(s, [](int c) { return std::tolower(c); });
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}
std::string title(std::string s) {
  bool start = true;
  for (char& c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
    start = !std::isalnum(u);
  }
  return s;
}

// Python's len() of a str counts code points, not UTF-8 bytes.
int64_t utf8_length(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

std::string replace_all(std::string s, const std::string& from, const std::string& to,
                        const RenderLimits& limits) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
    check_string(out, limits);
  }
  out.append(s, pos);
  return out;
}

Value keys_of(const Map& m) {
  List l;
  for (const auto& kv : m) l.emplace_back(kv.first);
  return Value(std::move(l));
}

Value as_list(const Value& v) {
  if (v.is_list()) return v;
  if (v.is_map()) return keys_of(v.map());
  if (v.is_string()) {
    List l;
    for (char c : v.str()) l.emplace_back(std::string(1, c));
    return Value(std::move(l));
  }
  if (v.is_undefined()) return Value(List{});
  fail(std::string("'") + v.type_name() + "' is not iterable");
}

// Python's sign-of-divisor modulo and floor division.
int64_t py_mod(int64_t a, int64_t b) {
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
int64_t py_floordiv(int64_t a, int64_t b) { return (a - py_mod(a, b)) / b; }

int compare(const std::string& op, const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) return a.str().compare(b.str());
  unsupported(op, a, b);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b, const RenderLimits& limits) {
  if (op == "==") return Value(equals(a, b));
  if (op == "!=") return Value(!equals(a, b));
  if (op == "<") return Value(compare(op, a, b) < 0);
  if (op == ">") return Value(compare(op, a, b) > 0);
  if (op == "<=") return Value(compare(op, a, b) <= 0);
  if (op == ">=") return Value(compare(op, a, b) >= 0);
  if (op == "~") {
    std::string s = a.to_output() + b.to_output();
    check_string(s, limits);
    return Value(std::move(s));
  }
  if (op == "in" || op == "not in") {
    bool found;
    if (b.is_string()) found = b.str().find(as_string(a, "'in' with a string")) != std::string::npos;
    else if (b.is_list()) found = std::any_of(b.list().begin(), b.list().end(), [&](const Value& x) { return equals(a, x); });
    else if (b.is_map()) found = a.is_string() && b.map().count(a.str()) > 0;
    else fail(std::string("argument of type '") + b.type_name() + "' is not iterable");
    return Value(op == "in" ? found : !found);
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      std::string s = a.str() + b.str();
      check_string(s, limits);
      return Value(std::move(s));
    }
    if (a.is_list() && b.is_list()) {
      check_list(a.list().size() + b.list().size(), limits);
      List l = a.list();
      l.insert(l.end(), b.list().begin(), b.list().end());
      return Value(std::move(l));
    }
  }
  if (op == "*" && (a.is_string() || a.is_list() || b.is_string() || b.is_list()) &&
      (a.is_int() || b.is_int())) {
    const Value& seq = a.is_int() ? b : a;
    const int64_t n = std::max<int64_t>(0, as_int(a.is_int() ? a : b));
    if (seq.is_string()) {
      if (!seq.str().empty() && static_cast<uint64_t>(n) > limits.max_output_bytes / seq.str().size())
        fail("string grew past the limit of " + std::to_string(limits.max_output_bytes) + " bytes");
      std::string s;
      for (int64_t i = 0; i < n; ++i) s += seq.str();
      return Value(std::move(s));
    }
    if (!seq.list().empty() && static_cast<uint64_t>(n) > limits.max_list_items / seq.list().size())
      check_list(limits.max_list_items + 1, limits);
    List l;
    for (int64_t i = 0; i < n; ++i) l.insert(l.end(), seq.list().begin(), seq.list().end());
    return Value(std::move(l));
  }
  if (!a.is_number() || !b.is_number()) unsupported(op, a, b);
  const bool real = a.is_double() || b.is_double() || op == "/";
  if (real) {
    const double x = a.as_double(), y = b.as_double();
    if ((op == "/" || op == "//" || op == "%") && y == 0) fail("division by zero");
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "/") return Value(x / y);
    if (op == "//") return Value(std::floor(x / y));
    if (op == "%") return Value(x - std::floor(x / y) * y);
    if (op == "**") return Value(std::pow(x, y));
  } else {
    const int64_t x = as_int(a), y = as_int(b);
    if ((op == "//" || op == "%") && y == 0) fail("division by zero");
    // Wrapping arithmetic (via unsigned) instead of signed-overflow UB on hostile inputs.
    if (op == "+") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) + static_cast<uint64_t>(y)));
    if (op == "-") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) - static_cast<uint64_t>(y)));
    if (op == "*") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) * static_cast<uint64_t>(y)));
    if (op == "//") return Value(y == -1 ? static_cast<int64_t>(0 - static_cast<uint64_t>(x)) : py_floordiv(x, y));
    if (op == "%") return Value(y == -1 ? int64_t{0} : py_mod(x, y));
    if (op == "**") {
      if (y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
      return Value(static_cast<int64_t>(std::pow(static_cast<double>(x), static_cast<double>(y))));
    }
  }
  fail("unknown operator '" + op + "'");
}

Value apply_filter(const std::string& name, const Value& v, std::span<const Value> args,
                   const RenderLimits& limits) {
  auto arg = [&](size_t i) -> const Value* { return i < args.size() ? &args[i] : nullptr; };
  if (name == "trim") return Value(strip(v.to_output(), arg(0), true, true));
  if (name == "upper") return Value(map_chars(v.to_output(), [](int c) { return std::toupper(c); }));
  if (name == "lower") return Value(map_chars(v.to_output(), [](int c) { return std::tolower(c); }));
  if (name == "capitalize") return Value(capitalize(v.to_output()));
  if (name == "title") return Value(title(v.to_output()));
  if (name == "string") return Value(v.to_output());
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value(utf8_length(v.str()));
    if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
    if (v.is_map()) return Value(static_cast<int64_t>(v.map().size()));
    if (v.is_undefined()) return Value(int64_t{0});
    fail(std::string("object of type '") + v.type_name() + "' has no length");
  }
  if (name == "default" || name == "d") {
    const bool boolean = arg(1) && arg(1)->truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return arg(0) ? *arg(0) : Value("");
    return v;
  }
  if (name == "join") {
    const std::string sep = arg(0) ? arg(0)->to_output() : "";
    const Value items = as_list(v);
    std::string out;
    for (size_t i = 0; i < items.list().size(); ++i) {
      if (i) out += sep;
      out += items.list()[i].to_output();
      check_string(out, limits);
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    const Value items = as_list(v);
    if (items.list().empty()) return Value();
    return name == "first" ? items.list().front() : items.list().back();
  }
  if (name == "list") return as_list(v);
  if (name == "int") {
    if (v.is_int() || v.is_bool()) return Value(as_int(v));
    if (v.is_double()) return Value(static_cast<int64_t>(std::get<double>(v.v)));
    try {
      return Value(static_cast<int64_t>(std::stoll(v.to_output())));
    } catch (const std::exception&) {
      return arg(0) ? *arg(0) : Value(int64_t{0});  // Jinja's int filter falls back to its default
    }
  }
  if (name == "replace") {
    if (args.size() < 2) fail("replace filter needs two arguments");
    return Value(replace_all(v.to_output(), args[0].to_output(), args[1].to_output(), limits));
  }
  fail("unknown filter '" + name + "'");
}

bool apply_test(const std::string& name, const Value& v, std::span<const Value> args) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_int() || v.is_double();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_double();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && std::get<bool>(v.v);
  if (name == "false") return v.is_bool() && !std::get<bool>(v.v);
  if (name == "mapping") return v.is_map();
  if (name == "sequence") return v.is_list() || v.is_string() || v.is_map();
  if (name == "iterable") return v.is_list() || v.is_string() || v.is_map();
  if (name == "even") return as_int(v) % 2 == 0;
  if (name == "odd") return as_int(v) % 2 != 0;
  fail("unknown test '" + name + "'");
}

Value call_method(const Value& obj, const std::string& name, std::span<const Value> args,
                  const RenderLimits& limits) {
  auto arg = [&](size_t i) -> const Value* { return i < args.size() ? &args[i] : nullptr; };
  if (obj.is_string()) {
    const std::string& s = obj.str();
    if (name == "strip") return Value(strip(s, arg(0), true, true));
    if (name == "lstrip") return Value(strip(s, arg(0), true, false));
    if (name == "rstrip") return Value(strip(s, arg(0), false, true));
    if (name == "upper" || name == "lower" || name == "capitalize" || name == "title")
      return apply_filter(name, obj, {}, limits);
    if (name == "startswith" || name == "endswith") {
      if (!arg(0)) fail(name + "() needs an argument");
      // Python accepts a tuple of prefixes; a list is the closest thing a template can write.
      List candidates = arg(0)->is_list() ? arg(0)->list() : List{*arg(0)};
      for (const Value& c : candidates) {
        const std::string& p = as_string(c, (name + "()").c_str());
        const bool hit = name == "startswith" ? s.compare(0, p.size(), p) == 0 && s.size() >= p.size()
                                              : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
        if (hit) return Value(true);
      }
      return Value(false);
    }
    if (name == "replace") {
      if (args.size() < 2) fail("replace() needs two arguments");
      return Value(replace_all(s, as_string(args[0], "replace()"), as_string(args[1], "replace()"), limits));
    }
    if (name == "split") {
      List parts;
      if (arg(0) && arg(0)->is_string() && !arg(0)->str().empty()) {
        const std::string& sep = arg(0)->str();
        size_t pos = 0;
        for (size_t hit; (hit = s.find(sep, pos)) != std::string::npos; pos = hit + sep.size())
          parts.emplace_back(s.substr(pos, hit - pos));
        parts.emplace_back(s.substr(pos));
      } else {  // Python's split(): runs of whitespace, no empty pieces
        size_t i = 0;
        while (i < s.size()) {
          while (i < s.size() && is_ws(s[i])) ++i;
          size_t j = i;
          while (j < s.size() && !is_ws(s[j])) ++j;
          if (j > i) parts.emplace_back(s.substr(i, j - i));
          i = j;
        }
      }
      return Value(std::move(parts));
    }
  } else if (obj.is_map()) {
    const Map& m = obj.map();
    if (name == "get") {
      if (!arg(0)) fail("get() needs an argument");
      auto it = arg(0)->is_string() ? m.find(arg(0)->str()) : m.end();
      if (it != m.end()) return it->second;
      return arg(1) ? *arg(1) : Value(nullptr);
    }
    if (name == "keys") return keys_of(m);
    if (name == "values" || name == "items") {
      List l;
      for (const auto& [k, val] : m) l.push_back(name == "values" ? val : Value(List{Value(k), val}));
      return Value(std::move(l));
    }
  } else if (obj.is_undefined()) {
    fail("cannot call method '" + name + "' on an undefined value");
  }
  fail(std::string("unknown method '") + name + "' for a value of type '" + obj.type_name() + "'");
}

Value call_range(std::span<const Value> args, const RenderLimits& limits) {
  if (args.empty() || args.size() > 3) fail("range() takes 1 to 3 arguments");
  int64_t start = 0, stop, step = 1;
  if (args.size() == 1) {
    stop = as_int(args[0]);
  } else {
    start = as_int(args[0]);
    stop = as_int(args[1]);
    if (args.size() == 3) step = as_int(args[2]);
  }
  if (step == 0) fail("range() step must not be zero");
  // Count before building, so range(10**12) fails fast instead of exhausting memory.
  const double n = std::max(0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)));
  if (n > static_cast<double>(limits.max_list_items)) check_list(limits.max_list_items + 1, limits);
  List l;
  l.reserve(static_cast<size_t>(n));
  // Indexing by count (not `i += step` until `stop`) cannot overflow near INT64_MAX.
  for (int64_t k = 0; k < static_cast<int64_t>(n); ++k) l.emplace_back(start + k * step);
  return Value(std::move(l));
}

}  // namespace jetmoe::jinja
