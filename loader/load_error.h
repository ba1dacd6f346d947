// The one error type for everything that reads model files: the message names the file, the
// tensor or field, and what was expected. cli/ catches it at the command boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace jetmoe {

class LoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace jetmoe
