use super::*;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn ok_headers() -> StreamEvent {
    StreamEvent::Headers {
        headers: h(&[(":status", "200"), ("content-type", "application/grpc")]),
        end_stream: false,
    }
}

fn data(bytes: Vec<u8>) -> StreamEvent {
    StreamEvent::Data {
        data: bytes,
        end_stream: false,
    }
}

fn close(status: u32, message: &str) -> Callback {
    Callback::Close {
        status,
        message: message.into(),
    }
}

#[test]
fn request_headers_follow_prepare_headers_then_metadata_then_the_async_client() {
    let headers = request_headers(
        "kserve-grpc",
        "inference.GRPCInferenceService",
        "ServerLive",
        Some(Duration::from_millis(1500)),
        &[("x-service".into(), b"s".to_vec())],
        h(&[("x-call", "c")]),
    );
    assert_eq!(
        headers,
        h(&[
            (":method", "POST"),
            (":path", "/inference.GRPCInferenceService/ServerLive"),
            (":authority", "kserve-grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "1500m"),
            ("content-type", "application/grpc"),
            ("x-service", "s"),
            ("x-call", "c"),
            ("x-envoy-internal", "true"),
            ("x-envoy-expected-rq-timeout-ms", "1500"),
        ])
    );
    let stream = request_headers("a", "s", "m", None, &[], Vec::new());
    assert!(header_map::get(&stream, "grpc-timeout").is_none());
    let zero = request_headers("a", "s", "m", Some(Duration::ZERO), &[], Vec::new());
    assert_eq!(header_map::get(&zero, "grpc-timeout"), Some(&b"0m"[..]));
    assert!(header_map::get(&zero, "x-envoy-expected-rq-timeout-ms").is_none());
}

#[test]
fn grpc_timeouts_use_the_smallest_unit_with_at_most_eight_digits() {
    assert_eq!(grpc_timeout(Duration::from_millis(99_999_999)), "99999999m");
    assert_eq!(grpc_timeout(Duration::from_secs(100_000)), "100000S");
    assert_eq!(grpc_timeout(Duration::from_secs(100_000_000)), "1666666M");
    assert_eq!(grpc_timeout(Duration::from_mins(100_000_000)), "1666666H");
}

#[test]
fn a_stream_sees_metadata_messages_split_across_frames_and_the_trailers() {
    let mut reader = Reader::new(Kind::Stream);
    let first = frame(b"one");
    let mut wire = first.clone();
    wire.extend(frame(b""));
    wire.extend(frame(b"three"));
    let (a, b) = wire.split_at(first.len() + 2);
    let mut got = reader.on_event(ok_headers());
    got.extend(reader.on_event(data(a.to_vec())));
    got.extend(reader.on_event(data(b.to_vec())));
    got.extend(reader.on_event(StreamEvent::Trailers(h(&[
        ("grpc-status", "5"),
        ("grpc-message", "model%20not%20found"),
    ]))));
    assert_eq!(
        got,
        vec![
            Callback::InitialMetadata(h(&[
                (":status", "200"),
                ("content-type", "application/grpc")
            ])),
            Callback::Message(b"one".to_vec()),
            Callback::Message(Vec::new()),
            Callback::Message(b"three".to_vec()),
            Callback::TrailingMetadata(h(&[
                ("grpc-status", "5"),
                ("grpc-message", "model%20not%20found")
            ])),
            close(5, "model not found"),
        ]
    );
    assert!(reader.is_done());
    assert!(reader.on_event(StreamEvent::Reset).is_empty());
}

#[test]
fn a_unary_call_gets_its_message_only_once_closed_ok() {
    let mut reader = Reader::new(Kind::Call);
    assert!(reader.on_event(ok_headers()).is_empty());
    assert!(reader.on_event(data(frame(b"answer"))).is_empty());
    let got = reader.on_event(StreamEvent::Trailers(h(&[("grpc-status", "0")])));
    assert_eq!(got, vec![Callback::Message(b"answer".to_vec())]);
}

#[test]
fn a_unary_call_closed_ok_without_a_message_is_internal() {
    let mut reader = Reader::new(Kind::Call);
    reader.on_event(ok_headers());
    let got = reader.on_event(StreamEvent::Trailers(h(&[("grpc-status", "0")])));
    assert_eq!(got, vec![close(INTERNAL, "")]);
}

#[test]
fn a_trailers_only_answer_closes_with_its_status_and_empty_initial_metadata() {
    // What the gateway's router sends for a timeout (504 mapped by httpToGrpcStatus).
    let reply = h(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        ("grpc-message", "upstream request timeout"),
    ]);
    let mut stream = Reader::new(Kind::Stream);
    let got = stream.on_event(StreamEvent::Headers {
        headers: reply.clone(),
        end_stream: true,
    });
    assert_eq!(
        got,
        vec![
            Callback::InitialMetadata(Vec::new()),
            Callback::TrailingMetadata(reply.clone()),
            close(14, "upstream request timeout"),
        ]
    );
    let mut call = Reader::new(Kind::Call);
    let got = call.on_event(StreamEvent::Headers {
        headers: reply,
        end_stream: true,
    });
    assert_eq!(got, vec![close(14, "upstream request timeout")]);
}

#[test]
fn a_non_200_answer_is_canceled_unless_trailers_only_with_a_status() {
    let mut reader = Reader::new(Kind::Stream);
    let got = reader.on_event(StreamEvent::Headers {
        headers: h(&[(":status", "503")]),
        end_stream: false,
    });
    assert_eq!(got.last(), Some(&close(CANCELED, "")));
    let mut reader = Reader::new(Kind::Stream);
    let got = reader.on_event(StreamEvent::Headers {
        headers: h(&[(":status", "404"), ("grpc-status", "12")]),
        end_stream: true,
    });
    assert_eq!(got.last(), Some(&close(12, "")));
}

#[test]
fn bad_frames_resets_and_data_that_ends_the_stream_have_envoys_statuses() {
    let mut compressed = Reader::new(Kind::Stream);
    compressed.on_event(ok_headers());
    let mut wire = frame(b"zz");
    wire[0] = 1;
    let got = compressed.on_event(data(wire));
    assert_eq!(
        got,
        vec![Callback::TrailingMetadata(Vec::new()), close(INTERNAL, "")]
    );
    let mut reset = Reader::new(Kind::Stream);
    reset.on_event(ok_headers());
    assert_eq!(
        reset.on_event(StreamEvent::Reset).last(),
        Some(&close(INTERNAL, ""))
    );
    let mut ended = Reader::new(Kind::Stream);
    ended.on_event(ok_headers());
    let got = ended.on_event(StreamEvent::Data {
        data: frame(b"x"),
        end_stream: true,
    });
    assert_eq!(got.last(), Some(&close(UNKNOWN, "")));
    assert_eq!(got[0], Callback::Message(b"x".to_vec()));
}

#[test]
fn trailers_without_a_status_are_unknown() {
    let mut reader = Reader::new(Kind::Stream);
    reader.on_event(ok_headers());
    let got = reader.on_event(StreamEvent::Trailers(h(&[("x", "y")])));
    assert_eq!(got.last(), Some(&close(UNKNOWN, "")));
}
