// The one error type of the template engine: syntax errors, render-time type errors,
// resource limits and `raise_exception(...)` calls from inside a template all surface as this.
#pragma once

#include <stdexcept>
#include <string>

namespace jetmoe {

class ChatTemplateError : public std::runtime_error {
 public:
  // line/column are 1-based positions in the template source; 0 when the error has no position
  // (e.g. raise_exception, whose message is the template author's text, kept verbatim).
  explicit ChatTemplateError(const std::string& message, int line = 0, int column = 0)
      : std::runtime_error(line > 0 ? message + " (line " + std::to_string(line) + ", column " +
                                          std::to_string(column) + ")"
                                    : message),
        message_(message),
        line_(line),
        column_(column) {}

  const std::string& message() const { return message_; }  // without the position suffix
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  std::string message_;
  int line_;
  int column_;
};

}  // namespace jetmoe
