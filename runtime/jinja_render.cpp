// Tree-walking renderer for jinja::Template.
#include <algorithm>
#include <optional>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "runtime/jinja_builtins.h"
#include "runtime/jinja_parser.h"
#include "runtime/jinja_template.h"

namespace jetmoe::jinja {

namespace {

class Renderer {
 public:
  Renderer(std::string_view source, const RenderLimits& limits) : src_(source), limits_(limits) {}

  std::string run(const Body& body, const nlohmann::json& context) {
    scopes_.emplace_back();
    if (context.is_object()) {
      for (const auto& [k, v] : context.items()) scopes_.back().emplace(k, Value::from_json(v));
    } else if (!context.is_null()) {
      throw ChatTemplateError("template context must be a JSON object");
    }
    exec(body);
    return std::move(out_);
  }

 private:
  using Scope = std::unordered_map<std::string, Value>;

  std::string_view src_;
  const RenderLimits& limits_;
  std::string out_;
  size_t iterations_ = 0;
  std::vector<Scope> scopes_;  // innermost last; a for-loop iteration pushes one

  [[noreturn]] void fail(const std::string& msg, size_t offset) const {
    int line, col;
    line_column(src_, offset, line, col);
    throw ChatTemplateError(msg, line, col);
  }

  void emit(const std::string& s, size_t offset) {
    if (out_.size() + s.size() > limits_.max_output_bytes)
      fail("rendered output exceeds the limit of " + std::to_string(limits_.max_output_bytes) + " bytes", offset);
    out_ += s;
  }

  void exec(const Body& body) {
    for (const auto& s : body) exec(*s);
  }

  void exec(const Stmt& s) {
    switch (s.kind) {
      case Stmt::Kind::Text: emit(s.text, s.offset); break;
      case Stmt::Kind::Output: emit(eval(*s.expr).to_output(), s.offset); break;
      case Stmt::Kind::Set: scopes_.back()[s.targets[0]] = eval(*s.expr); break;
      case Stmt::Kind::If: {
        // `if` opens no scope in Jinja: a `set` inside it is visible after `endif`.
        for (size_t i = 0; i < s.conditions.size(); ++i) {
          if (eval(*s.conditions[i]).truthy()) return exec(s.bodies[i]);
        }
        if (s.bodies.size() > s.conditions.size()) exec(s.bodies.back());
        break;
      }
      case Stmt::Kind::For: exec_for(s); break;
    }
  }

  void bind_targets(Scope& scope, const Stmt& s, const Value& item) {
    if (s.targets.size() == 1) {
      scope[s.targets[0]] = item;
      return;
    }
    if (!item.is_list() || item.list().size() != s.targets.size())
      fail("cannot unpack loop item into " + std::to_string(s.targets.size()) + " variables", s.offset);
    for (size_t i = 0; i < s.targets.size(); ++i) scope[s.targets[i]] = item.list()[i];
  }

  void count_iteration(size_t offset) {
    if (++iterations_ > limits_.max_loop_iterations)
      fail("loop iteration limit of " + std::to_string(limits_.max_loop_iterations) + " exceeded", offset);
  }

  void exec_for(const Stmt& s) {
    const Value seq = eval(*s.expr);
    Value items;
    try {
      items = apply_filter("list", seq, {}, limits_);
    } catch (const BuiltinError& e) {
      fail(e.what(), s.expr->offset);
    }
    const List* list = &items.list();
    List filtered;
    if (!s.conditions.empty()) {  // `for x in xs if cond`: loop.length counts kept items only
      for (const Value& item : *list) {
        count_iteration(s.offset);
        scopes_.emplace_back();
        bind_targets(scopes_.back(), s, item);
        const bool keep = eval(*s.conditions[0]).truthy();
        scopes_.pop_back();
        if (keep) filtered.push_back(item);
      }
      list = &filtered;
    }
    const int64_t n = static_cast<int64_t>(list->size());
    for (int64_t i = 0; i < n; ++i) {
      count_iteration(s.offset);
      // Each iteration gets a fresh scope, so `set` inside the body does not leak out (Jinja).
      scopes_.emplace_back();
      bind_targets(scopes_.back(), s, (*list)[i]);
      Map loop{{"index", Value(i + 1)},     {"index0", Value(i)},        {"revindex", Value(n - i)},
               {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)}, {"last", Value(i == n - 1)},
               {"length", Value(n)}};
      loop["previtem"] = i > 0 ? (*list)[i - 1] : Value();
      loop["nextitem"] = i + 1 < n ? (*list)[i + 1] : Value();
      scopes_.back()["loop"] = Value(std::move(loop));
      exec(s.bodies[0]);
      scopes_.pop_back();
    }
    if (n == 0 && s.bodies.size() > 1) exec(s.bodies[1]);
  }

  // A readable name for an expression in "is undefined" messages.
  static std::string describe(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Var: return e.name;
      case Expr::Kind::Attr: return describe(*e.a[0]) + "." + e.name;
      case Expr::Kind::Index: return describe(*e.a[0]) + "[...]";
      default: return "expression";
    }
  }

  const Value& require_defined(const Value& v, const Expr& e) const {
    if (v.is_undefined()) fail("'" + describe(e) + "' is undefined", e.offset);
    return v;
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  std::vector<Value> eval_args(const Expr& e, size_t first) {
    std::vector<Value> args;
    args.reserve(e.a.size() - first);
    for (size_t i = first; i < e.a.size(); ++i) args.push_back(eval(*e.a[i]));
    return args;
  }

  static Value subscript(const Value& obj, const Value& key) {
    if (obj.is_map()) {
      if (!key.is_string()) return Value();
      auto it = obj.map().find(key.str());
      return it == obj.map().end() ? Value() : it->second;
    }
    if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      const int64_t size = obj.is_list() ? static_cast<int64_t>(obj.list().size()) : static_cast<int64_t>(obj.str().size());
      int64_t i = key.is_int() ? std::get<int64_t>(key.v) : std::get<bool>(key.v);
      if (i < 0) i += size;
      if (i < 0 || i >= size) return Value();  // Jinja yields undefined, not an error
      if (obj.is_list()) return obj.list()[static_cast<size_t>(i)];
      return Value(std::string(1, obj.str()[static_cast<size_t>(i)]));
    }
    return Value();
  }

  Value slice(const Expr& e) {
    const Value obj = require_defined(eval(*e.a[0]), *e.a[0]);
    auto bound = [&](size_t k) -> std::optional<int64_t> {
      if (!e.a[k]) return std::nullopt;
      const Value v = eval(*e.a[k]);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) fail("slice indices must be integers", e.a[k]->offset);
      return std::get<int64_t>(v.v);
    };
    const auto start = bound(1), stop = bound(2), step_opt = bound(3);
    const int64_t step = step_opt.value_or(1);
    if (step == 0) fail("slice step cannot be zero", e.offset);
    int64_t n;
    if (obj.is_list()) n = static_cast<int64_t>(obj.list().size());
    else if (obj.is_string()) n = static_cast<int64_t>(obj.str().size());
    else fail(std::string("cannot slice a value of type '") + obj.type_name() + "'", e.offset);
    // Python's slice.indices(): clamp negative/out-of-range bounds.
    auto norm = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = norm(start, step > 0 ? 0 : n - 1);
    const int64_t end = norm(stop, step > 0 ? n : -1);
    List l;
    std::string s;
    for (int64_t i = b; step > 0 ? i < end : i > end; i += step) {
      if (obj.is_list()) l.push_back(obj.list()[static_cast<size_t>(i)]);
      else s += obj.str()[static_cast<size_t>(i)];
    }
    return obj.is_list() ? Value(std::move(l)) : Value(std::move(s));
  }

  Value eval(const Expr& e) {
    try {
      return eval_inner(e);
    } catch (const BuiltinError& err) {
      fail(err.what(), e.offset);
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Var: return lookup(e.name);
      case Expr::Kind::Attr: {
        const Value obj = require_defined(eval(*e.a[0]), *e.a[0]);
        return obj.is_map() ? subscript(obj, Value(e.name)) : Value();
      }
      case Expr::Kind::Index: {
        const Value obj = require_defined(eval(*e.a[0]), *e.a[0]);
        return subscript(obj, eval(*e.a[1]));
      }
      case Expr::Kind::Slice: return slice(e);
      case Expr::Kind::Method: {
        const Value obj = require_defined(eval(*e.a[0]), *e.a[0]);
        const auto args = eval_args(e, 1);
        return call_method(obj, e.name, args, limits_);
      }
      case Expr::Kind::Call: {
        const auto args = eval_args(e, 0);
        if (e.name == "raise_exception") {
          // The template author's message, verbatim and without a position: it is meant for users.
          throw ChatTemplateError(args.empty() ? std::string("raise_exception() called") : args[0].to_output());
        }
        return call_range(args, limits_);  // the only other known function (checked at parse time)
      }
      case Expr::Kind::Filter: {
        const Value v = eval(*e.a[0]);
        const auto args = eval_args(e, 1);
        return apply_filter(e.name, v, args, limits_);
      }
      case Expr::Kind::Test: {
        const Value v = eval(*e.a[0]);
        const auto args = eval_args(e, 1);
        return Value(apply_test(e.name, v, args) != e.negated);
      }
      case Expr::Kind::Unary: {
        const Value v = eval(*e.a[0]);
        if (e.name == "not") return Value(!v.truthy());
        require_defined(v, *e.a[0]);
        if (v.is_int() || v.is_bool()) {
          const int64_t x = v.is_int() ? std::get<int64_t>(v.v) : std::get<bool>(v.v);
          return Value(e.name == "-" ? static_cast<int64_t>(0 - static_cast<uint64_t>(x)) : x);
        }
        if (v.is_double()) return Value(e.name == "-" ? -std::get<double>(v.v) : std::get<double>(v.v));
        fail(std::string("bad operand type for unary ") + e.name + ": '" + v.type_name() + "'", e.offset);
      }
      case Expr::Kind::Binary: {
        if (e.name == "and" || e.name == "or") {  // Python semantics: yields an operand
          Value l = eval(*e.a[0]);
          if (l.truthy() == (e.name == "or")) return l;
          return eval(*e.a[1]);
        }
        const Value l = eval(*e.a[0]);
        const Value r = eval(*e.a[1]);
        // Jinja's default Undefined fails in arithmetic and ordering but compares and prints.
        if (e.name != "==" && e.name != "!=" && e.name != "~") {
          require_defined(l, *e.a[0]);
          require_defined(r, *e.a[1]);
        }
        return binary_op(e.name, l, r, limits_);
      }
      case Expr::Kind::Ternary:
        if (eval(*e.a[1]).truthy()) return eval(*e.a[0]);
        return e.a[2] ? eval(*e.a[2]) : Value();
      case Expr::Kind::ListLit: {
        List l;
        for (const auto& x : e.a) l.push_back(eval(*x));
        return Value(std::move(l));
      }
      case Expr::Kind::DictLit: {
        Map m;
        for (size_t i = 0; i + 1 < e.a.size(); i += 2) {
          const Value k = eval(*e.a[i]);
          if (!k.is_string()) fail("dict keys must be strings", e.a[i]->offset);
          m[k.str()] = eval(*e.a[i + 1]);
        }
        return Value(std::move(m));
      }
    }
    fail("internal error: unknown expression", e.offset);
  }
};

}  // namespace

Template Template::parse(std::string source, WhitespaceOptions ws) {
  Template t;
  auto src = std::make_shared<const std::string>(std::move(source));
  const auto tokens = tokenize(*src, ws);
  t.body_ = std::make_shared<const Body>(jinja::parse(*src, tokens));
  t.source_ = std::move(src);
  return t;
}

std::string Template::render(const nlohmann::json& context, const RenderLimits& limits) const {
  return Renderer(*source_, limits).run(*body_, context);
}

}  // namespace jetmoe::jinja
