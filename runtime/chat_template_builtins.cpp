// Built-in chat templates: verbatim Jinja sources of well-known Hugging Face hub templates, so
// that a checkpoint without a `chat_template` (or a user asking for a named format) renders
// exactly what the published tokenizer_config.json would.
#include <array>
#include <utility>

#include "runtime/chat_template.h"

namespace jetmoe {

namespace {

// HuggingFaceH4/zephyr-7b-beta; also the presumed JetMoE-8B-chat template (architecture doc 11.2).
// The newlines between tags are part of the template.
const std::string kZephyr = R"({% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %})";

// The common ChatML template (e.g. teknium/OpenHermes-2.5-Mistral-7B).
const std::string kChatML =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

// meta-llama/Llama-2-7b-chat-hf. Writes bos_token before every [INST]; no generation prompt
// (the prompt already ends with [/INST]).
const std::string kLlama2 =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

// mistralai/Mistral-7B-Instruct-v0.1 (the revised template with optional system message, which
// is folded into the first user turn).
const std::string kMistral = R"({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
)";

// Not a hub template: a readable fallback for base models ("role: content" lines).
const std::string kPlain =
    R"({% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %})";

struct Builtin {
  const char* name;
  const std::string* source;
  std::vector<std::string> end_markers;
};

const std::vector<Builtin>& builtins() {
  static const std::vector<Builtin> table = {
      {"zephyr", &kZephyr, {"</s>"}},
      {"chatml", &kChatML, {"<|im_end|>"}},
      {"llama2", &kLlama2, {"</s>"}},
      {"mistral", &kMistral, {"</s>"}},
      // No end marker in the text: stop when the model starts the next turn's line.
      {"plain", &kPlain, {"\nuser:", "\nsystem:"}},
  };
  return table;
}

const Builtin& find(const std::string& name) {
  for (const auto& b : builtins())
    if (name == b.name) return b;
  std::string known;
  for (const auto& b : builtins()) known += (known.empty() ? "" : ", ") + std::string(b.name);
  throw ChatTemplateError("unknown built-in chat template '" + name + "' (known: " + known + ")");
}

}  // namespace

std::vector<std::string> builtin_template_names() {
  std::vector<std::string> names;
  for (const auto& b : builtins()) names.emplace_back(b.name);
  return names;
}

const std::string& builtin_template_source(const std::string& name) { return *find(name).source; }

std::vector<std::string> end_of_turn_markers(const std::string& name) { return find(name).end_markers; }

}  // namespace jetmoe
