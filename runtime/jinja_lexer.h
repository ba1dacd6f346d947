// Splits template source into one flat token stream (text runs, tag delimiters, expression
// tokens), applying whitespace control (`{%-`, `-%}`, `{{-`, `-}}`, trim_blocks, lstrip_blocks)
// here so that the parser and renderer never see whitespace they must drop.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace jetmoe::jinja {

// Jinja's Environment options that change whitespace. Jinja's defaults are both false (every
// newline between tags is kept); Hugging Face transformers renders chat templates with both true.
struct WhitespaceOptions {
  bool trim_blocks = false;    // drop the first newline after a block or comment tag
  bool lstrip_blocks = false;  // drop spaces/tabs from line start up to a block or comment tag
};

enum class TokenKind {
  Text,        // literal template text; `text` holds it
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,        // identifier or keyword
  String,      // quoted literal, `text` holds the unescaped value
  Int,
  Float,
  Op,  // punctuation / operator, `text` holds it
  End,
};

struct Token {
  TokenKind kind;
  std::string text;
  size_t offset;  // into the source, for line/column in errors
};

std::vector<Token> tokenize(std::string_view source, const WhitespaceOptions& ws);

// 1-based line and column of a byte offset.
void line_column(std::string_view source, size_t offset, int& line, int& column);

}  // namespace jetmoe::jinja
