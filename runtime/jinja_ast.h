// Syntax tree of a parsed template. One node struct per level (expression, statement) with a
// kind tag keeps the tree simple to build and walk; children are owned by unique_ptr.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/jinja_value.h"

namespace jetmoe::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,   // value
    Var,       // name
    Attr,      // a[0].name
    Index,     // a[0][a[1]]
    Slice,     // a[0][a[1]:a[2]:a[3]], missing bounds are null
    Method,    // a[0].name(a[1..])
    Call,      // name(a[0..])  (global function)
    Filter,    // a[0] | name(a[1..])
    Test,      // a[0] is [not] name(a[1..])
    Unary,     // op a[0]: "-", "+", "not"
    Binary,    // a[0] op a[1]: arithmetic, comparison, in, not in, and, or, ~
    Ternary,   // a[0] if a[1] else a[2] (a[2] may be null)
    ListLit,   // [a...]
    DictLit,   // {a[0]: a[1], a[2]: a[3], ...}
  };
  Kind kind;
  size_t offset = 0;  // source position for error messages
  Value value;
  std::string name;  // variable / attribute / method / function / filter / test / operator
  bool negated = false;
  std::vector<ExprPtr> a;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind { Text, Output, If, For, Set };
  Kind kind;
  size_t offset = 0;
  std::string text;                 // Text
  ExprPtr expr;                     // Output value, For iterable, Set value
  std::vector<ExprPtr> conditions;  // If: one per if/elif branch; For: optional inline filter
  std::vector<Body> bodies;         // If: one per condition, plus one more for else; For: body, else
  std::vector<std::string> targets; // For loop variables (one, or several to unpack); Set target
};

}  // namespace jetmoe::jinja
