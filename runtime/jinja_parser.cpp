#include "runtime/jinja_parser.h"

#include <algorithm>
#include <array>

#include "runtime/jinja_error.h"

namespace jetmoe::jinja {

namespace {

constexpr std::array kFilters = {"trim",  "length", "count", "upper", "lower", "capitalize", "title",
                                 "string", "join", "default", "d", "first", "last", "list",
                                 "int", "replace"};
constexpr std::array kTests = {"defined", "undefined", "none",  "string", "number", "integer", "float",
                               "mapping", "sequence",  "iterable", "boolean", "true", "false",
                               "even", "odd"};
constexpr std::array kFunctions = {"raise_exception", "range"};

template <size_t N>
bool contains(const std::array<const char*, N>& names, const std::string& name) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

// Nesting deeper than this is refused at parse time; it also bounds the renderer's recursion,
// since the renderer recurses exactly along the tree.
constexpr int kMaxDepth = 128;

class Parser {
 public:
  Parser(std::string_view src, const std::vector<Token>& toks) : src_(src), t_(toks) {}

  Body parse_template() {
    std::string end_tag;
    Body body = parse_body({}, end_tag);
    return body;
  }

 private:
  std::string_view src_;
  const std::vector<Token>& t_;
  size_t i_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, size_t offset) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail("template nested too deeply", offset);
    }
    ~DepthGuard() { --p.depth_; }
  };

  [[noreturn]] void fail(const std::string& msg, size_t offset) const {
    int line, col;
    line_column(src_, offset, line, col);
    throw ChatTemplateError(msg, line, col);
  }
  [[noreturn]] void fail_here(const std::string& msg) const { fail(msg, cur().offset); }

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool at_op(const char* op) const { return cur().kind == TokenKind::Op && cur().text == op; }
  bool at_name(const char* n) const { return cur().kind == TokenKind::Name && cur().text == n; }
  void expect_op(const char* op) {
    if (!at_op(op)) fail_here(std::string("expected '") + op + "', found " + describe(cur()));
    ++i_;
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::Name) fail_here("expected a name, found " + describe(cur()));
    return t_[i_++].text;
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::BlockEnd: return "end of tag '%}'";
      case TokenKind::VarEnd: return "end of tag '}}'";
      case TokenKind::End: return "end of template";
      case TokenKind::Text: return "template text";
      default: return "'" + t.text + "'";
    }
  }

  ExprPtr node(Expr::Kind k, size_t offset) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->offset = offset;
    return e;
  }

  // ---- statements -------------------------------------------------------------------------

  // Parses statements until a block tag whose name is in `end_names` (consumed up to its name);
  // at top level (`end_names` empty) until the end of the template.
  Body parse_body(const std::vector<std::string>& end_names, std::string& end_tag) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::End) {
        if (!end_names.empty()) fail(std::string("unexpected end of template: missing '{% ") + end_names.back() + " %}'", t.offset);
        return body;
      }
      if (t.kind == TokenKind::Text) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::Text;
        s->offset = t.offset;
        s->text = t.text;
        body.push_back(std::move(s));
        ++i_;
      } else if (t.kind == TokenKind::VarBegin) {
        ++i_;
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::Output;
        s->offset = t.offset;
        s->expr = parse_expr();
        if (cur().kind != TokenKind::VarEnd) fail_here("expected '}}', found " + describe(cur()));
        ++i_;
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::BlockBegin) {
        const size_t tag_offset = t.offset;
        ++i_;
        if (cur().kind != TokenKind::Name) fail_here("expected a tag name after '{%'");
        const std::string name = cur().text;
        if (std::find(end_names.begin(), end_names.end(), name) != end_names.end()) {
          ++i_;
          end_tag = name;
          return body;
        }
        ++i_;
        DepthGuard guard(*this, tag_offset);
        if (name == "if") body.push_back(parse_if(tag_offset));
        else if (name == "for") body.push_back(parse_for(tag_offset));
        else if (name == "set") body.push_back(parse_set(tag_offset));
        else if (name == "endif" || name == "endfor" || name == "elif" || name == "else")
          fail("unexpected '{% " + name + " %}'", tag_offset);
        else
          fail("unknown or unsupported tag '" + name + "'", tag_offset);
      } else {
        fail_here("unexpected " + describe(t));
      }
    }
  }

  void expect_block_end() {
    if (cur().kind != TokenKind::BlockEnd) fail_here("expected '%}', found " + describe(cur()));
    ++i_;
  }

  StmtPtr parse_if(size_t offset) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::If;
    s->offset = offset;
    s->conditions.push_back(parse_expr());
    expect_block_end();
    while (true) {
      std::string end;
      s->bodies.push_back(parse_body({"elif", "else", "endif"}, end));
      if (end == "endif") break;
      if (end == "elif") {
        s->conditions.push_back(parse_expr());
        expect_block_end();
      } else {  // else: the last body, then endif
        expect_block_end();
        s->bodies.push_back(parse_body({"endif"}, end));
        break;
      }
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_for(size_t offset) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::For;
    s->offset = offset;
    s->targets.push_back(expect_name());
    while (at_op(",")) {
      ++i_;
      s->targets.push_back(expect_name());
    }
    if (!at_name("in")) fail_here("expected 'in' in for loop, found " + describe(cur()));
    ++i_;
    s->expr = parse_or();  // no ternary here: a trailing `if` is the loop filter
    if (at_name("if")) {
      ++i_;
      s->conditions.push_back(parse_expr());
    }
    expect_block_end();
    std::string end;
    s->bodies.push_back(parse_body({"else", "endfor"}, end));
    if (end == "else") {
      expect_block_end();
      s->bodies.push_back(parse_body({"endfor"}, end));
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(size_t offset) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::Set;
    s->offset = offset;
    s->targets.push_back(expect_name());
    if (at_op(".")) fail_here("attribute assignment ('set a.b = ...', namespace()) is not supported");
    expect_op("=");
    s->expr = parse_expr();
    expect_block_end();
    return s;
  }

  // ---- expressions (Jinja precedence, loosest first) ------------------------------------------

  ExprPtr parse_expr() {
    DepthGuard guard(*this, cur().offset);
    const size_t off = cur().offset;
    ExprPtr value = parse_or();
    if (!at_name("if")) return value;
    ++i_;
    auto e = node(Expr::Kind::Ternary, off);
    e->a.push_back(std::move(value));
    e->a.push_back(parse_or());
    if (at_name("else")) {
      ++i_;
      e->a.push_back(parse_expr());
    } else {
      e->a.push_back(nullptr);  // Jinja yields undefined when the condition is false
    }
    return e;
  }

  ExprPtr binary(std::string op, ExprPtr l, ExprPtr r, size_t off) {
    auto e = node(Expr::Kind::Binary, off);
    e->name = std::move(op);
    e->a.push_back(std::move(l));
    e->a.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (at_name("or")) {
      const size_t off = cur().offset;
      ++i_;
      l = binary("or", std::move(l), parse_and(), off);
    }
    return l;
  }

  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (at_name("and")) {
      const size_t off = cur().offset;
      ++i_;
      l = binary("and", std::move(l), parse_not(), off);
    }
    return l;
  }

  ExprPtr parse_not() {
    if (at_name("not")) {
      DepthGuard guard(*this, cur().offset);
      auto e = node(Expr::Kind::Unary, cur().offset);
      ++i_;
      e->name = "not";
      e->a.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr l = parse_math1();
    while (true) {
      const size_t off = cur().offset;
      std::string op;
      if (cur().kind == TokenKind::Op &&
          (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">="))) {
        op = cur().text;
        ++i_;
      } else if (at_name("in")) {
        op = "in";
        ++i_;
      } else if (at_name("not") && peek().kind == TokenKind::Name && peek().text == "in") {
        op = "not in";
        i_ += 2;
      } else {
        return l;
      }
      l = binary(op, std::move(l), parse_math1(), off);
    }
  }

  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (at_op("+") || at_op("-")) {
      const size_t off = cur().offset;
      std::string op = t_[i_++].text;
      l = binary(op, std::move(l), parse_concat(), off);
    }
    return l;
  }

  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (at_op("~")) {
      const size_t off = cur().offset;
      ++i_;
      l = binary("~", std::move(l), parse_math2(), off);
    }
    return l;
  }

  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const size_t off = cur().offset;
      std::string op = t_[i_++].text;
      l = binary(op, std::move(l), parse_pow(), off);
    }
    return l;
  }

  ExprPtr parse_pow() {
    ExprPtr l = parse_unary();
    while (at_op("**")) {
      const size_t off = cur().offset;
      ++i_;
      l = binary("**", std::move(l), parse_unary(), off);
    }
    return l;
  }

  ExprPtr parse_unary() {
    DepthGuard guard(*this, cur().offset);
    if (at_op("-") || at_op("+")) {
      auto e = node(Expr::Kind::Unary, cur().offset);
      e->name = t_[i_++].text;
      e->a.push_back(parse_unary());
      return e;
    }
    ExprPtr e = parse_postfix(parse_primary());
    return parse_filters_and_tests(std::move(e));
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const size_t off = t.offset;
    switch (t.kind) {
      case TokenKind::String: {
        auto e = node(Expr::Kind::Literal, off);
        std::string s;
        while (cur().kind == TokenKind::String) s += t_[i_++].text;  // 'a' 'b' is 'ab' in Jinja
        e->value = Value(std::move(s));
        return e;
      }
      case TokenKind::Int: {
        auto e = node(Expr::Kind::Literal, off);
        try {
          e->value = Value(static_cast<int64_t>(std::stoll(t.text)));
        } catch (const std::exception&) {
          fail("integer literal out of range", off);
        }
        ++i_;
        return e;
      }
      case TokenKind::Float: {
        auto e = node(Expr::Kind::Literal, off);
        e->value = Value(std::stod(t.text));
        ++i_;
        return e;
      }
      case TokenKind::Name: {
        ++i_;
        auto e = node(Expr::Kind::Literal, off);
        if (t.text == "true" || t.text == "True") e->value = Value(true);
        else if (t.text == "false" || t.text == "False") e->value = Value(false);
        else if (t.text == "none" || t.text == "None") e->value = Value(nullptr);
        else {
          e->kind = Expr::Kind::Var;
          e->name = t.text;
          if (at_op("(")) {
            if (!is_known_function(t.text)) fail("unknown function '" + t.text + "'", off);
            e->kind = Expr::Kind::Call;
            parse_args(*e);
          }
        }
        return e;
      }
      case TokenKind::Op:
        if (t.text == "(") {
          ++i_;
          ExprPtr inner = parse_expr();
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          ++i_;
          auto e = node(Expr::Kind::ListLit, off);
          while (!at_op("]")) {
            e->a.push_back(parse_expr());
            if (!at_op(",")) break;
            ++i_;
          }
          expect_op("]");
          return e;
        }
        if (t.text == "{") {
          ++i_;
          auto e = node(Expr::Kind::DictLit, off);
          while (!at_op("}")) {
            e->a.push_back(parse_expr());
            expect_op(":");
            e->a.push_back(parse_expr());
            if (!at_op(",")) break;
            ++i_;
          }
          expect_op("}");
          return e;
        }
        break;
      default: break;
    }
    fail_here("expected an expression, found " + describe(t));
  }

  // `(arg, arg, ...)` appended to e.a; keyword arguments are not supported.
  void parse_args(Expr& e) {
    expect_op("(");
    while (!at_op(")")) {
      if (cur().kind == TokenKind::Name && peek().kind == TokenKind::Op && peek().text == "=")
        fail_here("keyword arguments are not supported");
      e.a.push_back(parse_expr());
      if (!at_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const size_t off = cur().offset;
      if (at_op(".")) {
        ++i_;
        std::string name = expect_name();
        if (at_op("(")) {
          auto m = node(Expr::Kind::Method, off);
          m->name = std::move(name);
          m->a.push_back(std::move(e));
          parse_args(*m);
          e = std::move(m);
        } else {
          auto a = node(Expr::Kind::Attr, off);
          a->name = std::move(name);
          a->a.push_back(std::move(e));
          e = std::move(a);
        }
      } else if (at_op("[")) {
        ++i_;
        ExprPtr parts[3];
        int colons = 0;
        if (!at_op(":")) parts[0] = parse_expr();
        while (at_op(":") && colons < 2) {
          ++i_;
          ++colons;
          if (!at_op(":") && !at_op("]")) parts[colons] = parse_expr();
        }
        expect_op("]");
        auto s = node(colons ? Expr::Kind::Slice : Expr::Kind::Index, off);
        s->a.push_back(std::move(e));
        if (colons) {
          for (auto& p : parts) s->a.push_back(std::move(p));
        } else {
          if (!parts[0]) fail("empty subscript", off);
          s->a.push_back(std::move(parts[0]));
        }
        e = std::move(s);
      } else if (at_op("(")) {
        fail_here("only named functions and methods can be called");
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filters_and_tests(ExprPtr e) {
    while (true) {
      const size_t off = cur().offset;
      if (at_op("|")) {
        ++i_;
        auto f = node(Expr::Kind::Filter, off);
        f->name = expect_name();
        if (!is_known_filter(f->name)) fail("unknown filter '" + f->name + "'", off);
        f->a.push_back(std::move(e));
        if (at_op("(")) parse_args(*f);
        e = std::move(f);
      } else if (at_name("is")) {
        ++i_;
        auto t = node(Expr::Kind::Test, off);
        if (at_name("not")) {
          ++i_;
          t->negated = true;
        }
        // `none`, `true`, `false` are keywords elsewhere but test names here.
        t->name = expect_name();
        if (t->name == "None") t->name = "none";
        if (!is_known_test(t->name)) fail("unknown test '" + t->name + "'", off);
        t->a.push_back(std::move(e));
        if (at_op("(")) parse_args(*t);
        e = std::move(t);
      } else {
        return e;
      }
    }
  }
};

}  // namespace

bool is_known_filter(const std::string& name) { return contains(kFilters, name); }
bool is_known_test(const std::string& name) { return contains(kTests, name); }
bool is_known_function(const std::string& name) { return contains(kFunctions, name); }

Body parse(std::string_view source, const std::vector<Token>& tokens) {
  return Parser(source, tokens).parse_template();
}

}  // namespace jetmoe::jinja
