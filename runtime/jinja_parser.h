// Recursive-descent parser from the token stream to the syntax tree, with Jinja's operator
// precedence. Unknown filters, tests and functions are rejected here so that a broken template
// fails when it is loaded, not halfway through a conversation.
#pragma once

#include <string_view>
#include <vector>

#include "runtime/jinja_ast.h"
#include "runtime/jinja_lexer.h"

namespace jetmoe::jinja {

// Throws ChatTemplateError (with line/column) on any syntax error.
Body parse(std::string_view source, const std::vector<Token>& tokens);

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
bool is_known_function(const std::string& name);

}  // namespace jetmoe::jinja
