// The values a template computes with: Jinja's data model cut down to what chat templates use.
// Lists and maps are shared immutable nodes, so copying a Value (loop variables, `set`) is cheap.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace jetmoe::jinja {

struct Value;
using List = std::vector<Value>;
using Map = std::map<std::string, Value>;

// `Undefined` is distinct from none: Jinja prints it as "" and `is defined` tells them apart.
struct Undefined {};

struct Value {
  using Storage = std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string,
                               std::shared_ptr<const List>, std::shared_ptr<const Map>>;
  Storage v;

  Value() = default;
  Value(std::nullptr_t) : v(nullptr) {}
  Value(bool b) : v(b) {}
  Value(int64_t i) : v(i) {}
  Value(int i) : v(int64_t{i}) {}
  Value(double d) : v(d) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(List l) : v(std::make_shared<const List>(std::move(l))) {}
  Value(Map m) : v(std::make_shared<const Map>(std::move(m))) {}

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<std::nullptr_t>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_int() const { return std::holds_alternative<int64_t>(v); }
  bool is_double() const { return std::holds_alternative<double>(v); }
  bool is_number() const { return is_int() || is_double() || is_bool(); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<const List>>(v); }
  bool is_map() const { return std::holds_alternative<std::shared_ptr<const Map>>(v); }

  const std::string& str() const { return std::get<std::string>(v); }
  const List& list() const { return *std::get<std::shared_ptr<const List>>(v); }
  const Map& map() const { return *std::get<std::shared_ptr<const Map>>(v); }
  double as_double() const;  // bool/int/double

  // Python truthiness: none, undefined, false, 0, "" and empty containers are false.
  bool truthy() const;
  // What `{{ x }}` prints: Python's str() (True/False/None, lists as ['a', 1]); undefined -> "".
  std::string to_output() const;
  // Python repr(), used inside printed containers.
  std::string repr() const;
  const char* type_name() const;

  static Value from_json(const nlohmann::json& j);
};

// Python equality: deep for containers, numeric across bool/int/double, false across other types.
bool equals(const Value& a, const Value& b);

}  // namespace jetmoe::jinja
