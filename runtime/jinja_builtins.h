// The operations a template can apply to values: operators, filters, tests, methods and global
// functions. They throw BuiltinError (no source position); the renderer rethrows it as a
// ChatTemplateError pointing at the expression that failed.
#pragma once

#include <span>
#include <stdexcept>
#include <string>

#include "runtime/jinja_template.h"
#include "runtime/jinja_value.h"

namespace jetmoe::jinja {

struct BuiltinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Arithmetic, concatenation and comparison operators (not and/or, which short-circuit).
Value binary_op(const std::string& op, const Value& a, const Value& b, const RenderLimits& limits);
Value apply_filter(const std::string& name, const Value& v, std::span<const Value> args,
                   const RenderLimits& limits);
bool apply_test(const std::string& name, const Value& v, std::span<const Value> args);
Value call_method(const Value& obj, const std::string& name, std::span<const Value> args,
                  const RenderLimits& limits);
Value call_range(std::span<const Value> args, const RenderLimits& limits);

}  // namespace jetmoe::jinja
