// A parsed Jinja2-subset template: parse once, render many times with a JSON context.
//
// Supported: text, {{ expr }}, {% if/elif/else/endif %}, {% for x[, y] in expr [if cond] %}
// (with loop.index/index0/revindex/revindex0/first/last/length and {% else %}), {% set x = expr %},
// comments, whitespace control (-), string/int/float/bool/none literals, list and dict literals,
// attribute/subscript/slice access, + - * / // % ** ~, comparisons, and/or/not, in/not in,
// `is [not]` tests, filters, string and dict methods, ternaries, raise_exception() and range().
// Not supported (rejected with a ChatTemplateError naming the construct): macros, blocks,
// includes, namespace(), keyword arguments, `set` blocks.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "runtime/jinja_ast.h"
#include "runtime/jinja_error.h"
#include "runtime/jinja_lexer.h"

namespace jetmoe::jinja {

// Caps that turn a runaway template (huge ranges, nested loops, string doubling) into a
// ChatTemplateError instead of a hang or an out-of-memory kill.
struct RenderLimits {
  size_t max_output_bytes = 32u << 20;       // rendered text, and any single string value
  size_t max_loop_iterations = 1'000'000;    // summed over all loops of one render
  size_t max_list_items = 1'000'000;         // any list built by range(), + or *
};

class Template {
 public:
  // Throws ChatTemplateError with line/column on a syntax error.
  static Template parse(std::string source, WhitespaceOptions ws = {});

  // Variables of `context` (a JSON object) are the template's globals.
  std::string render(const nlohmann::json& context, const RenderLimits& limits = {}) const;

  const std::string& source() const { return *source_; }

 private:
  Template() = default;
  // Shared and immutable: copies of a Template are cheap and renders never modify the tree.
  std::shared_ptr<const std::string> source_;
  std::shared_ptr<const Body> body_;
};

}  // namespace jetmoe::jinja
