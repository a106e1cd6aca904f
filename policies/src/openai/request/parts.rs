//! A chat message's list of content parts, as the two readers behind KServe's OpenAI plane
//! read it:
//!
//! - pydantic (vLLM 0.24's `ChatCompletionMessageParam`, `vllm/entrypoints/chat_utils.py`) is
//!   a smart union of OpenAI's message types, whose parts are typed objects validated lazily
//!   (while the server reads them: KServe then answers 500), and vLLM's own message type, whose
//!   parts may also be strings. For `developer`, `system`, `user`, `assistant` and `tool` the
//!   union keeps OpenAI's type unless vLLM's sets more fields, so a list of strings only is
//!   refused there; a part that is neither a string nor an object is refused for every role
//!   (KServe answers 500 for those roles, 422 for the others);
//! - vLLM's parser of the parts it then runs (`_parse_chat_message_content_mm_part` and
//!   `_parse_chat_message_content_part` in the same file) refuses an object without `type`
//!   unless it carries a media URL directly (`{"image_url": "..."}`), a `type` that is not a
//!   string or not one of its types, media objects without their `url` (`_ImageParser`,
//!   `_AudioParser`, `_VideoParser` validate them), and a text part whose `text` is not a
//!   string (it joins the texts).
//!
//! Each part is checked by its own `type`: what pydantic's OpenAI and vLLM types require of
//! it. Fields a type does not name are left to the server, as pydantic ignores them.

use serde_json::{Map, Value};

use super::{Invalid, invalid};

/// The roles whose OpenAI message type takes a list of typed parts (`openai.types.chat`).
const OPENAI_ROLES: [&str; 5] = ["developer", "system", "user", "assistant", "tool"];

/// vLLM's part types (`MM_PARSER_MAP` and `PART_TYPES_TO_SKIP_NONE_CONTENT`), named in the
/// refusal of any other.
const TYPES: &str = "audio_embeds, audio_url, image_embeds, image_pil, image_url, input_audio, \
                     input_image, input_text, output_text, prompt_embeds, refusal, text, \
                     thinking, tool_reference, video_url";

/// Check `parts`, the `content` of a message with `role` at `at` (`messages[0].content`).
pub(super) fn check(role: &str, parts: &[Value], at: &str) -> Result<(), Invalid> {
    let mut typed = false;
    for (j, part) in parts.iter().enumerate() {
        let here = format!("{at}[{j}]");
        match part {
            Value::String(_) => {}
            Value::Object(part) => typed |= object(part, &here)?,
            _ => return Err(invalid(&here, "must be a string or an object")),
        }
    }
    if OPENAI_ROLES.contains(&role) && !parts.is_empty() && !typed {
        return Err(invalid(
            &format!("{at}[0]"),
            format!(
                "a {role} message's content parts must include a chat part such as \
                 {{\"type\": \"text\", \"text\": \"...\"}}"
            ),
        ));
    }
    Ok(())
}

/// One object part, by its `type`: whether it is one of the chat part types of vLLM's
/// message union (the Responses API's `input_text`, `output_text` and `input_image`, which
/// vLLM's parser also reads, are not). vLLM reads a part with a `uuid` (not null) as a media
/// part given directly, whatever its `type`.
fn object(part: &Map<String, Value>, at: &str) -> Result<bool, Invalid> {
    let uuid = part.get("uuid").is_some_and(|u| !u.is_null());
    let kind = match part.get("type") {
        _ if uuid => return direct(part, at, true),
        None => return direct(part, at, false),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(invalid(&format!("{at}.type"), "must be a string")),
    };
    match kind {
        "input_text" | "output_text" => string(part, "text", at).map(|()| false),
        "input_image" => Ok(false),
        // vLLM skips a text or refusal part whose text is null; pydantic's types take none.
        "text" | "refusal" if part.get(kind).is_some_and(Value::is_null) => Ok(false),
        _ => chat_part(kind, part, at).map(|()| true),
    }
}

/// A media part given directly (vLLM's `CustomChatCompletionContentSimple*Param`): an
/// `image_url`, `audio_url` or `video_url` string, or with a `uuid` also the object form
/// `{"url": ...}` or an `image_pil`, `image_embeds` or `audio_embeds` member.
fn direct(part: &Map<String, Value>, at: &str, uuid: bool) -> Result<bool, Invalid> {
    let url = |field: &str| match part.get(field) {
        Some(Value::String(_)) => true,
        Some(Value::Object(media)) => uuid && media.get("url").is_some_and(Value::is_string),
        _ => false,
    };
    let embedded = || {
        uuid && ["image_pil", "image_embeds", "audio_embeds"]
            .iter()
            .any(|field| part.contains_key(*field))
    };
    if ["image_url", "audio_url", "video_url"]
        .iter()
        .any(|f| url(f))
        || embedded()
    {
        return Ok(true);
    }
    let message = if uuid {
        "a content part with a uuid is read as media: it needs an image_url, audio_url or \
         video_url (a string or {\"url\": ...}), or image_pil, image_embeds or audio_embeds"
    } else {
        "a content part needs a \"type\" (such as {\"type\": \"text\", \"text\": \"...\"}), \
         or an image_url, audio_url or video_url string"
    };
    Err(invalid(at, message))
}

/// A part of one of the chat types, by what its type requires.
fn chat_part(kind: &str, part: &Map<String, Value>, at: &str) -> Result<(), Invalid> {
    match kind {
        "text" => string(part, "text", at),
        "refusal" => string(part, "refusal", at),
        "thinking" => string(part, "thinking", at),
        "tool_reference" => optional_string(part, "name", at),
        "prompt_embeds" => string(part, "data", at),
        "image_url" => media_url(part, "image_url", at, true),
        "audio_url" => media_url(part, "audio_url", at, false),
        "video_url" => media_url(part, "video_url", at, false),
        "input_audio" => input_audio(part, at),
        // Optional payloads: a string, an object of strings, or null (vLLM reads them later).
        "image_embeds" | "audio_embeds" => Ok(()),
        // A PIL image cannot come from JSON: only its absence (`null`) parses.
        "image_pil" => match part.get("image_pil") {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(invalid(
                &format!("{at}.image_pil"),
                "must be null (a PIL image cannot be sent as JSON)",
            )),
        },
        other => Err(invalid(
            &format!("{at}.type"),
            format!("unsupported content part type {other:?} (supported: {TYPES})"),
        )),
    }
}

fn string(part: &Map<String, Value>, field: &str, at: &str) -> Result<(), Invalid> {
    match part.get(field) {
        Some(Value::String(_)) => Ok(()),
        None => Err(invalid(&format!("{at}.{field}"), "required")),
        Some(_) => Err(invalid(&format!("{at}.{field}"), "must be a string")),
    }
}

fn optional_string(part: &Map<String, Value>, field: &str, at: &str) -> Result<(), Invalid> {
    match part.get(field) {
        None => Ok(()),
        Some(_) => string(part, field, at),
    }
}

/// `image_url`, `audio_url`, `video_url` with their `type`: an object with a `url` string
/// (OpenAI's `ImageURL` also takes `detail`), as vLLM's `_ImageParser`, `_AudioParser` and
/// `_VideoParser` validate them (the bare string is read only without `type`).
fn media_url(
    part: &Map<String, Value>,
    field: &str,
    at: &str,
    detail: bool,
) -> Result<(), Invalid> {
    let here = format!("{at}.{field}");
    match part.get(field) {
        Some(Value::Object(media)) => {
            string(media, "url", &here)?;
            match media.get("detail") {
                Some(Value::String(d))
                    if detail && matches!(d.as_str(), "auto" | "low" | "high" | "original") =>
                {
                    Ok(())
                }
                Some(_) if detail => Err(invalid(
                    &format!("{here}.detail"),
                    "must be one of auto, low, high, original",
                )),
                _ => Ok(()),
            }
        }
        None => Err(invalid(&here, "required")),
        Some(_) => Err(invalid(&here, "must be an object with a url")),
    }
}

/// `input_audio`: `{"data": base64, "format": "wav" | "mp3"}` (OpenAI's `InputAudio`).
fn input_audio(part: &Map<String, Value>, at: &str) -> Result<(), Invalid> {
    let here = format!("{at}.input_audio");
    let Some(Value::Object(audio)) = part.get("input_audio") else {
        return Err(invalid(&here, "must be an object with data and format"));
    };
    string(audio, "data", &here)?;
    match audio.get("format") {
        Some(Value::String(f)) if f == "wav" || f == "mp3" => Ok(()),
        _ => Err(invalid(&format!("{here}.format"), "must be wav or mp3")),
    }
}
