// Language-feature tests for the Jinja subset behind ChatTemplate (runtime/jinja_*).
// Expected strings follow Jinja2's semantics with its default Environment unless a test says
// otherwise.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/jinja_template.h"

using jetmoe::ChatTemplateError;
using jetmoe::jinja::RenderLimits;
using jetmoe::jinja::Template;
using jetmoe::jinja::WhitespaceOptions;
using nlohmann::json;

namespace {

std::string render(const std::string& src, const json& ctx = json::object(), WhitespaceOptions ws = {}) {
  return Template::parse(src, ws).render(ctx);
}

// Message of the ChatTemplateError thrown while parsing or rendering `src` ("" if none thrown).
std::string error_of(const std::string& src, const json& ctx = json::object(), const RenderLimits& limits = {}) {
  try {
    Template::parse(src).render(ctx, limits);
  } catch (const ChatTemplateError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ChatTemplateJinja, TextAndOutput) {
  EXPECT_EQ(render("hello"), "hello");
  EXPECT_EQ(render("a{{ x }}b", {{"x", "X"}}), "aXb");
  EXPECT_EQ(render("{{ 'it\\'s' }}|{{ \"q\\\"\" }}|{{ 'a\\nb' }}"), "it's|q\"|a\nb");
  EXPECT_EQ(render("{{ 42 }} {{ -7 }} {{ true }} {{ False }} {{ none }} {{ None }}"), "42 -7 True False None None");
  EXPECT_EQ(render("[{{ undefined_thing }}]"), "[]");  // undefined prints as empty
  EXPECT_EQ(render("{{ xs }}", {{"xs", json::array({1, "a"})}}), "[1, 'a']");
  EXPECT_EQ(render("{{ 1.5 }}"), "1.5");
}

TEST(ChatTemplateJinja, Comments) {
  EXPECT_EQ(render("a{# anything {{ here }} #}b"), "ab");
  EXPECT_EQ(render("a  {#- trimmed -#}  b"), "ab");
}

TEST(ChatTemplateJinja, AttributeSubscriptAndSlices) {
  json ctx = {{"messages", json::array({{{"role", "system"}, {"content", "S"}},
                                        {{"role", "user"}, {"content", "U"}},
                                        {{"role", "assistant"}, {"content", "A"}}})}};
  EXPECT_EQ(render("{{ messages[0]['role'] }} {{ messages[1].content }} {{ messages[-1].role }}", ctx),
            "system U assistant");
  EXPECT_EQ(render("{% for m in messages[1:] %}{{ m.content }}{% endfor %}", ctx), "UA");
  EXPECT_EQ(render("{% for m in messages[:-1] %}{{ m.content }}{% endfor %}", ctx), "SU");
  EXPECT_EQ(render("{% for m in messages[::-1] %}{{ m.content }}{% endfor %}", ctx), "AUS");
  EXPECT_EQ(render("{{ 'abcdef'[1:4] }}{{ 'abc'[-1] }}"), "bcdc");
  EXPECT_EQ(render("[{{ messages[7] }}]", ctx), "[]");  // out of range is undefined
  EXPECT_EQ(render("{{ messages[0].missing is defined }}", ctx), "False");
}

TEST(ChatTemplateJinja, LoopVariables) {
  json ctx = {{"xs", json::array({"a", "b", "c"})}};
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ x }}"
                   "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}{{ loop.length }};{% endfor %}",
                   ctx),
            "10aF3;21b3;32cL3;");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.revindex }}{% endfor %}", ctx), "321");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in xs if x != 'b' %}{{ x }}{{ loop.length }}{% endfor %}", ctx), "a2c2");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}),
            "a=1;b=2;");
  EXPECT_EQ(render("{% for i in range(3) %}{{ i }}{% endfor %}"), "012");
}

TEST(ChatTemplateJinja, IfElifElse) {
  const std::string t = "{% if x == 1 %}one{% elif x == 2 %}two{% elif x > 5 %}big{% else %}other{% endif %}";
  EXPECT_EQ(render(t, {{"x", 1}}), "one");
  EXPECT_EQ(render(t, {{"x", 2}}), "two");
  EXPECT_EQ(render(t, {{"x", 9}}), "big");
  EXPECT_EQ(render(t, {{"x", 3}}), "other");
  EXPECT_EQ(render("{% if x %}yes{% endif %}"), "");  // undefined is falsy
}

TEST(ChatTemplateJinja, SetAndScoping) {
  EXPECT_EQ(render("{% set x = 'a' + 'b' %}{{ x }}"), "ab");
  // `if` opens no scope: a set inside it is visible afterwards (Llama-2 template relies on it).
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
  // A for loop does: sets inside the body do not leak out.
  EXPECT_EQ(render("{% set n = 0 %}{% for i in [1, 2] %}{% set n = i %}{{ n }}{% endfor %}{{ n }}"), "120");
}

TEST(ChatTemplateJinja, Operators) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 // 2 }} {{ 7 / 2 }}"),
            "7 9 1 2 3 3.5");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}"), "a1None");
  EXPECT_EQ(render("{{ 1 < 2 }}{{ 2 <= 2 }}{{ 3 > 4 }}{{ 'a' >= 'b' }}{{ 1 == 1 }}{{ 'a' != 'a' }}"),
            "TrueTrueFalseFalseTrueFalse");
  EXPECT_EQ(render("{{ true and false }}{{ true or false }}{{ not true }}{{ not 1 == 2 }}"), "FalseTrueFalseTrue");
  EXPECT_EQ(render("{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 3 not in [1] }}", {{"d", {{"k", 1}}}}),
            "TrueTrueTrueTrue");
  // Python equality across types: a string is never equal to False, but 1 == True.
  EXPECT_EQ(render("{{ 'x' != false }}{{ 1 == true }}{{ none == none }}"), "TrueTrueTrue");
  EXPECT_EQ(render("{{ 'yes' if c else 'no' }}|{{ 'yes' if not c else 'no' }}", {{"c", true}}), "yes|no");
  EXPECT_EQ(render("[{{ 'x' if false }}]"), "[]");
  EXPECT_EQ(render("{{ [1] + [2] }}"), "[1, 2]");
}

TEST(ChatTemplateJinja, Filters) {
  EXPECT_EQ(render("[{{ '  a b \n' | trim }}]"), "[a b]");
  EXPECT_EQ(render("{{ xs | length }} {{ 'héllo' | length }} {{ d|length }}",
                   {{"xs", json::array({1, 2, 3})}, {"d", {{"a", 1}}}}),
            "3 5 1");
  EXPECT_EQ(render("{{ 'MiXed' | upper }} {{ 'MiXed' | lower }}"), "MIXED mixed");
  EXPECT_EQ(render("{{ '  ab ' | trim | upper }}"), "AB");
  // Filters bind tighter than '+': this is 'x' + ('  y '|trim).
  EXPECT_EQ(render("{{ 'x' + '  y ' | trim }}"), "xy");
  EXPECT_EQ(render("{{ xs | join(', ') }}", {{"xs", json::array({"a", "b"})}}), "a, b");
  EXPECT_EQ(render("{{ missing | default('dflt') }}"), "dflt");
}

TEST(ChatTemplateJinja, Methods) {
  EXPECT_EQ(render("[{{ '  hi  '.strip() }}]"), "[hi]");
  EXPECT_EQ(render("{{ 'hello'.startswith('he') }}{{ 'hello'.endswith('lo') }}{{ 'hello'.startswith('lo') }}"),
            "TrueTrueFalse");
  EXPECT_EQ(render("{{ s.strip().upper() }}", {{"s", " x "}}), "X");
  EXPECT_EQ(render("{{ d.get('a') }}{{ d.get('zz', 'no') }}", {{"d", {{"a", 1}}}}), "1no");
}

TEST(ChatTemplateJinja, Tests) {
  json ctx = {{"a", 1}, {"n", nullptr}};
  EXPECT_EQ(render("{{ a is defined }}{{ b is defined }}{{ b is not defined }}{{ a is not defined }}", ctx),
            "TrueFalseTrueFalse");
  EXPECT_EQ(render("{{ n is none }}{{ a is none }}{{ n is not none }}{{ a is string }}{{ a is number }}", ctx),
            "TrueFalseFalseFalseTrue");
  EXPECT_EQ(render("{% if not b is defined %}undef{% endif %}", ctx), "undef");
}

TEST(ChatTemplateJinja, WhitespaceControl) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a \n {{- 'x' -}} \n b"), "axb");
  EXPECT_EQ(render("a \n {{ 'x' }} \n b"), "a \n x \n b");
  // Default Jinja keeps the newline after a block tag...
  EXPECT_EQ(render("{% if true %}\nx\n{% endif %}\n"), "\nx\n\n");
  // ...trim_blocks drops it, lstrip_blocks drops the indentation before a block tag.
  WhitespaceOptions hf{.trim_blocks = true, .lstrip_blocks = true};
  EXPECT_EQ(render("{% if true %}\nx\n  {% endif %}\ny", {}, hf), "x\ny");
  EXPECT_EQ(render("  {{ 'v' }}\n", {}, hf), "  v\n");  // expressions are not blocks
}

TEST(ChatTemplateJinja, RaiseExceptionSurfacesMessage) {
  try {
    render("ok{{ raise_exception('Conversation roles must alternate') }}");
    FAIL() << "no exception";
  } catch (const ChatTemplateError& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate");
    EXPECT_EQ(e.message(), "Conversation roles must alternate");
  }
}

TEST(ChatTemplateJinja, SyntaxErrorsCarryPosition) {
  try {
    Template::parse("line one\n  {{ x ");
    FAIL() << "no exception";
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_EQ(e.column(), 3);
    EXPECT_NE(std::string(e.what()).find("unclosed"), std::string::npos) << e.what();
  }
  EXPECT_NE(error_of("{% if x %}never closed").find("endif"), std::string::npos);
  EXPECT_NE(error_of("{% for x in xs %}...").find("endfor"), std::string::npos);
  EXPECT_NE(error_of("{% endif %}").find("unexpected"), std::string::npos);
  EXPECT_NE(error_of("{# no end").find("comment"), std::string::npos);
  EXPECT_NE(error_of("{{ 'open }}").find("unterminated"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 + }}").find("expected an expression"), std::string::npos);
  EXPECT_NE(error_of("{% macro m() %}{% endmacro %}").find("'macro'"), std::string::npos);
}

TEST(ChatTemplateJinja, UnknownNamesAreNamed) {
  EXPECT_NE(error_of("{{ x | frobnicate }}").find("unknown filter 'frobnicate'"), std::string::npos);
  EXPECT_NE(error_of("{{ frob(1) }}").find("unknown function 'frob'"), std::string::npos);
  EXPECT_NE(error_of("{{ x is frob }}").find("unknown test 'frob'"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a'.frob() }}").find("unknown method 'frob'"), std::string::npos);
  // Unknown filters fail at parse time, even in a branch that never runs.
  EXPECT_THROW(Template::parse("{% if false %}{{ x | frobnicate }}{% endif %}"), ChatTemplateError);
}

TEST(ChatTemplateJinja, TypeErrorsAreErrors) {
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operand"), std::string::npos);
  EXPECT_NE(error_of("{{ nothing + 'a' }}").find("'nothing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ nothing.attr }}").find("'nothing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 // 0 }}").find("division by zero"), std::string::npos);
}

TEST(ChatTemplateJinja, RunawayTemplatesHitLimits) {
  RenderLimits small;
  small.max_loop_iterations = 10'000;
  small.max_output_bytes = 1 << 16;
  small.max_list_items = 10'000;
  EXPECT_NE(error_of("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", {}, small)
                .find("iteration limit"),
            std::string::npos);
  EXPECT_NE(error_of("{% for i in range(1000000000000) %}{% endfor %}", {}, small).find("limit"), std::string::npos);
  // String doubling at top level (a loop body's `set` would not carry over): 2^20 bytes after
  // 20 steps, past the 64 KiB cap.
  std::string doubling = "{% set s = 'x' %}";
  for (int i = 0; i < 40; ++i) doubling += "{% set s = s + s %}";
  EXPECT_NE(error_of(doubling, {}, small).find("string grew past the limit"), std::string::npos);
  // Output growth through a loop hits the output cap.
  EXPECT_NE(error_of("{% for i in range(5000) %}{{ 'x' * 100 }}{% endfor %}", {}, small).find("rendered output exceeds"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'abc' * 100000000 }}", {}, small).find("limit"), std::string::npos);
  // Default limits still stop a billion-iteration nest quickly.
  EXPECT_NE(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
                .find("iteration limit"),
            std::string::npos);
  // Deep nesting is refused at parse time rather than overflowing the stack.
  EXPECT_NE(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "{% if true %}";
  EXPECT_NE(error_of(deep).find("nested too deeply"), std::string::npos);
}

TEST(ChatTemplateJinja, ParseOnceRenderMany) {
  const Template t = Template::parse("{{ x }}");
  const Template copy = t;  // shares the parsed tree
  EXPECT_EQ(t.render({{"x", 1}}), "1");
  EXPECT_EQ(copy.render({{"x", 2}}), "2");
  EXPECT_EQ(t.render({{"x", 3}}), "3");
}
