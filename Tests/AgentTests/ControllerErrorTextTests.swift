import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// What the agent keeps of a controller's error answer: its code and message, cut and on one line. The text goes into
/// every log line of a failed poll and into the state file (`controllerProblem`); a message of megabytes made that file
/// larger than the agent reads back, and the agent would not start again.
@Suite struct ControllerErrorTextTests {
    static func body(code: String, message: String) -> [UInt8] {
        (try? JSONEncoder().encode(APIErrorBody(error: code, message: message))).map { Array($0) } ?? []
    }

    static let cases: [(label: String, body: [UInt8], code: String, message: String)] = [
        ("an ordinary error", body(code: "token_revoked", message: "the token was revoked"), "token_revoked", "the token was revoked"),
        ("a message of 60,000 bytes", body(code: "x", message: String(repeating: "a", count: 60_000)), "x", String(repeating: "a", count: 1024)),
        ("a body of 9 MiB is not read", body(code: "x", message: String(repeating: "/", count: 9 << 20)), "http_403", ""),
        ("a code of 1 KiB", body(code: String(repeating: "c", count: 1024), message: ""), String(repeating: "c", count: 64), ""),
        ("line breaks", body(code: "bad", message: "one\ntwo\r\nthree"), "bad", "one two  three"),
        ("a body over 64 KiB is not read", Array(repeating: UInt8(ascii: " "), count: 70_000) + body(code: "x", message: "y"), "http_403", ""),
        ("not JSON", Array("<html>Forbidden</html>".utf8), "http_403", ""),
    ]

    @Test(arguments: cases.indices)
    func theErrorIsCut(_ index: Int) {
        let (label, body, code, message) = Self.cases[index]
        do throws(ControllerError) {
            try AgentControllerClient.check(HTTPClient.Response(status: 403, body: body), url: "https://ferry.example/v1/agents/a/desired-state")
            Issue.record("\(label): accepted")
        } catch {
            guard case .rejected(_, let status, let actualCode, let actualMessage) = error else {
                Issue.record("\(label): \(error)")
                return
            }
            #expect(status == 403, "\(label)")
            #expect(actualCode == code, "\(label)")
            #expect(actualMessage == message, "\(label)")
            #expect("\(error)".utf8.count < 1300, "\(label)")
        }
    }

    /// A 200 whose document is refused: the parse error quotes what it refuses (an unknown field's name, as long as the
    /// controller makes it), and the text is cut like an error body's. Real sockets: a compromised controller on
    /// 127.0.0.1 answering a desired-state poll and a trust root fetch.
    @Test(arguments: ["desired state", "trust root"])
    func aRefusedDocumentIsCut(_ call: String) async throws {
        let port = try LoopbackPorts.reserve()
        let rogue = RogueController(port: port)
        // An unknown field named by 9 MiB of `/` (the desired state), by 1 MiB (a root envelope is at most 1.6 MB).
        let desired = #"{"agentId":"a","pollSeconds":5,"releases":[],""# + String(repeating: "/", count: 9 << 20) + #"":1}"#
        let root = #"{"payloadType":"x","payload":"","signatures":[],""# + String(repeating: "/", count: 1 << 20) + #"":1}"#
        await rogue.recorder.set(Array(desired.utf8))
        await rogue.recorder.setRoot(Array(root.utf8))
        let client = AgentControllerClient(baseURL: "http://127.0.0.1:\(port)", token: "t", http: HTTPClient())
        // Until the stand-in listens, the client finds nothing there (`.unreachable`).
        let outcome = try await eventually("the stand-in answers", timeout: .seconds(10), interval: .milliseconds(50)) {
            () -> Result<Void, ControllerError>? in
            do throws(ControllerError) {
                if call == "desired state" {
                    _ = try await client.desiredState(agentID: "a", etag: nil, wait: 0)
                } else {
                    _ = try await client.root(version: 2)
                }
                return .success(())
            } catch {
                if case .unreachable = error { return nil }
                return .failure(error)
            }
        }
        await rogue.stop()
        guard case .failure(.invalidResponse(_, let reason)) = outcome else {
            Issue.record("\(call): \(outcome)")
            return
        }
        #expect(reason.utf8.count <= AgentControllerClient.maximumErrorMessageBytes, "\(call): \(reason.utf8.count) bytes")
        #expect(reason.contains("//"), "\(call): \(reason.prefix(200))")
        #expect(!reason.contains("\n"))
    }
}
