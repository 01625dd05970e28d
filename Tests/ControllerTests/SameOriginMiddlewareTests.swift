import Testing

@testable import Controller

/// Which `Origin` values count as the controller's own, for a given `Host`.
@Suite struct SameOriginMiddlewareTests {
    static let cases: [(origin: String, host: String, same: Bool)] = [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
        ("HTTP://Ferry.Example.com", "ferry.example.com", true),
        ("https://ferry.example.com", "ferry.example.com", true),
        ("https://ferry.example.com:443", "ferry.example.com", true),
        ("https://ferry.example.com", "ferry.example.com:443", true),
        ("http://[::1]:8080", "[::1]:8080", true),
        ("https://ferry.example.com:8443", "ferry.example.com:8443", true),
        ("https://attacker.example", "ferry.example.com", false),
        ("https://ferry.example.com.attacker.example", "ferry.example.com", false),
        ("http://127.0.0.1:1", "127.0.0.1:8080", false),
        ("https://ferry.example.com:8443", "ferry.example.com", false),
        ("null", "ferry.example.com", false),
        ("", "ferry.example.com", false),
        ("ferry.example.com", "ferry.example.com", false),
        ("file://ferry.example.com", "ferry.example.com", false),
        ("https://user@ferry.example.com", "ferry.example.com", false),
        ("https://ferry.example.com/path", "ferry.example.com", false),
        ("https://ferry.example.com:99999", "ferry.example.com:99999", false),
        ("https://ferry.example.com:", "ferry.example.com", false),
        ("http://[::1", "[::1]", false),
        ("https://:8080", ":8080", false),
    ]

    @Test func originsComparedWithTheHost() {
        for (origin, host, same) in Self.cases {
            #expect(SameOriginMiddleware<FerryRequestContext>.isSameOrigin(origin, host: host) == same, "\(origin) vs \(host)")
        }
    }
}
