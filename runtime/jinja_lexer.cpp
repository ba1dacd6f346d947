#include "runtime/jinja_lexer.h"

#include <cctype>

#include "runtime/jinja_error.h"

namespace jetmoe::jinja {

void line_column(std::string_view source, size_t offset, int& line, int& column) {
  line = 1;
  column = 1;
  for (size_t i = 0; i < offset && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  Lexer(std::string_view src, const WhitespaceOptions& ws) : src_(src), ws_(ws) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool strip_next_text = false;  // set by a closing `-%}` / `-}}` / `-#}`
    while (pos < src_.size()) {
      const size_t open = find_open(pos);
      std::string text(src_.substr(pos, open - pos));
      if (open == src_.size()) {
        emit_text(std::move(text), pos, strip_next_text, false);
        break;
      }
      const char kind = src_[open + 1];  // '{', '%' or '#'
      const bool minus = open + 2 < src_.size() && src_[open + 2] == '-';
      const bool plus = open + 2 < src_.size() && src_[open + 2] == '+';
      if (kind != '{' && ws_.lstrip_blocks && !minus && !plus) lstrip_line(text);
      emit_text(std::move(text), pos, strip_next_text, minus);
      size_t p = open + 2 + ((minus || plus) ? 1 : 0);
      bool close_minus = false;
      if (kind == '#') {
        const size_t close = src_.find("#}", p);
        if (close == std::string_view::npos) fail("unclosed comment: '{#' without '#}'", open);
        close_minus = close > p && src_[close - 1] == '-';
        pos = close + 2;
      } else {
        const bool is_block = kind == '%';
        out_.push_back({is_block ? TokenKind::BlockBegin : TokenKind::VarBegin, "", open});
        pos = lex_tag(p, is_block, open, close_minus);
        out_.push_back({is_block ? TokenKind::BlockEnd : TokenKind::VarEnd, "", pos});
      }
      if (kind != '{' && ws_.trim_blocks && !close_minus) {
        if (pos < src_.size() && src_[pos] == '\n') ++pos;
        else if (pos + 1 < src_.size() && src_[pos] == '\r' && src_[pos + 1] == '\n') pos += 2;
      }
      strip_next_text = close_minus;
    }
    out_.push_back({TokenKind::End, "", src_.size()});
    return std::move(out_);
  }

 private:
  std::string_view src_;
  WhitespaceOptions ws_;
  std::vector<Token> out_;

  [[noreturn]] void fail(const std::string& msg, size_t offset) const {
    int line, col;
    line_column(src_, offset, line, col);
    throw ChatTemplateError(msg, line, col);
  }

  size_t find_open(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  static void lstrip_line(std::string& text) {
    size_t i = text.size();
    while (i > 0 && (text[i - 1] == ' ' || text[i - 1] == '\t')) --i;
    // Only when the tag is the first non-blank thing on its line (or in the template).
    if (i == 0 || text[i - 1] == '\n') text.resize(i);
  }

  void emit_text(std::string text, size_t offset, bool strip_front, bool strip_back) {
    if (strip_front) {
      size_t i = 0;
      while (i < text.size() && is_space(text[i])) ++i;
      text.erase(0, i);
    }
    if (strip_back) {
      while (!text.empty() && is_space(text.back())) text.pop_back();
    }
    if (!text.empty()) out_.push_back({TokenKind::Text, std::move(text), offset});
  }

  // Tokenizes the inside of a `{{ }}` or `{% %}` tag; returns the offset just past its close.
  size_t lex_tag(size_t p, bool is_block, size_t open, bool& close_minus) {
    const char closer = is_block ? '%' : '}';
    while (true) {
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (p >= src_.size()) fail(is_block ? "unclosed tag: '{%' without '%}'" : "unclosed tag: '{{' without '}}'", open);
      const char c = src_[p];
      if (c == '-' && p + 2 < src_.size() && src_[p + 1] == closer && src_[p + 2] == '}') {
        close_minus = true;
        return p + 3;
      }
      if (c == closer && p + 1 < src_.size() && src_[p + 1] == '}') return p + 2;
      if (c == '{' && p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%'))
        fail(is_block ? "unclosed tag: '{%' without '%}'" : "unclosed tag: '{{' without '}}'", open);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        out_.push_back({TokenKind::Name, std::string(src_.substr(p, e - p)), p});
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = p;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        TokenKind k = TokenKind::Int;
        if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          k = TokenKind::Float;
          ++e;
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
        out_.push_back({k, std::string(src_.substr(p, e - p)), p});
        p = e;
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static constexpr std::string_view two[] = {"==", "!=", "<=", ">=", "//", "**"};
        bool matched = false;
        for (auto op : two) {
          if (src_.substr(p, 2) == op) {
            out_.push_back({TokenKind::Op, std::string(op), p});
            p += 2;
            matched = true;
            break;
          }
        }
        if (matched) continue;
        if (std::string_view("+-*/%~<>()[].,:|={}!").find(c) == std::string_view::npos)
          fail(std::string("unexpected character '") + c + "' in tag", p);
        out_.push_back({TokenKind::Op, std::string(1, c), p});
        ++p;
      }
    }
  }

  size_t lex_string(size_t p) {
    const char q = src_[p];
    const size_t start = p++;
    std::string value;
    while (true) {
      if (p >= src_.size()) fail("unterminated string literal", start);
      char c = src_[p++];
      if (c == q) break;
      if (c == '\\' && p < src_.size()) {
        char e = src_[p++];
        switch (e) {
          case 'n': value += '\n'; break;
          case 't': value += '\t'; break;
          case 'r': value += '\r'; break;
          case '0': value += '\0'; break;
          case '\\': value += '\\'; break;
          case '\'': value += '\''; break;
          case '"': value += '"'; break;
          default: value += '\\'; value += e;  // Python keeps unknown escapes verbatim
        }
      } else {
        value += c;
      }
    }
    out_.push_back({TokenKind::String, std::move(value), start});
    return p;
  }
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const WhitespaceOptions& ws) {
  return Lexer(source, ws).run();
}

}  // namespace jetmoe::jinja
