import Foundation
import SQLKit
import Shared
import Testing

@testable import Controller

extension HighAvailabilityTests {
    /// A prune through A removes the shared rows (artifact and chunks) of what it does not keep, so B answers 404 for it
    /// and refuses a release naming it; what it keeps stays in the database.
    @Test func aPruneThroughARemovesTheSharedRows() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let oldBytes = Array("old shared artifact".utf8) + Array(repeating: 1, count: 2048)
            let newBytes = Array("new shared artifact".utf8) + Array(repeating: 2, count: 2048)
            func reference(_ bytes: [UInt8]) -> ArtifactReference {
                let digest = SHA256.hash(bytes)
                return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
            }
            for bytes in [oldBytes, newBytes] {
                #expect(try await http.send("POST", aURL + "/v1/artifacts", token: a.operatorToken, body: Data(bytes)).status == 201)
            }
            for (serial, bytes) in [(Int64(1), oldBytes), (2, newBytes)] {
                let envelope = try a.envelope(ControllerFixture.release(serial: serial, artifact: reference(bytes)))
                let published = try await http.send("POST", aURL + "/v1/releases", token: a.operatorToken, body: Data(envelope.readableBytesView))
                #expect(published.status == 201)
            }
            let old = SHA256.hash(oldBytes).hex
            let stale = StoredTime.milliseconds(Date().addingTimeInterval(-2 * 86_400))
            try await a.store.readDB.raw("UPDATE artifacts SET created_at = \(bind: stale)").run()
            for bytes in [oldBytes, newBytes] {
                let path = a.directory.path + "/artifacts/" + SHA256.hash(bytes).hex
                try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-2 * 86_400)], ofItemAtPath: path)
            }

            let answer = try await http.send("POST", aURL + "/v1/artifacts/prune", token: a.operatorToken, body: Data(#"{"keepReleases": 1}"#.utf8))
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            let removed = FleetDocument.array(try JSONValue.parse(Array(answer.body)).object?["removed"]).compactMap { $0.object?["sha256"] }
            #expect(removed == [.string(old)])
            let rows = try await b.store.readDB.raw("SELECT sha256 FROM artifacts").all().map { try $0.decode(column: "sha256", as: String.self) }
            #expect(rows == [SHA256.hash(newBytes).hex])
            let chunks = try await b.store.readDB.raw("SELECT COUNT(*) AS n FROM artifact_chunks WHERE sha256 = \(bind: old)").first()?
                .decode(column: "n", as: Int.self)
            #expect(chunks == 0)
            #expect(try await http.send("GET", bURL + "/v1/artifacts/\(old)", token: b.operatorToken).status == 404)
            let envelope = try b.envelope(ControllerFixture.release(serial: 3, artifact: reference(oldBytes)))
            let refused = try await http.send("POST", bURL + "/v1/releases", token: b.operatorToken, body: Data(envelope.readableBytesView))
            #expect(refused.status == 422)
            #expect(try JSONValue.parse(Array(refused.body)).object?["error"] == .string("unknown_artifact"))
        }
    }

    /// Serial 1 names `old`, serial 2 `new`, both published through A; every row and A's files made two days old, so
    /// that a prune through A keeping one release removes `old`.
    static func agedReleases(
        _ a: ControllerFixture,
        _ aURL: String,
        _ http: LiveHTTP
    ) async throws -> (old: ArtifactReference, new: ArtifactReference) {
        let old = try await Self.upload(Array("old shared artifact".utf8) + Array(repeating: 1, count: 2048), through: a, aURL, http)
        let new = try await Self.upload(Array("new shared artifact".utf8) + Array(repeating: 2, count: 2048), through: a, aURL, http)
        try await Self.publish(1, artifact: old, through: a, aURL, http)
        try await Self.publish(2, artifact: new, through: a, aURL, http)
        let stale = StoredTime.milliseconds(Date().addingTimeInterval(-2 * 86_400))
        try await a.store.readDB.raw("UPDATE artifacts SET created_at = \(bind: stale)").run()
        for artifact in [old, new] {
            let path = a.directory.path + "/artifacts/" + artifact.sha256.hex
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-2 * 86_400)], ofItemAtPath: path)
        }
        return (old, new)
    }

    /// The same bytes uploaded again through B (acknowledged: every controller can serve them) are kept by a prune
    /// through A that read nothing of B's upload: the upload marks the shared row as stored now. A deleted the row it
    /// found two days old, and the database lacked what B had just acknowledged.
    @Test func anUploadThroughBKeepsItsRowFromAPruneThroughA() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let (old, _) = try await Self.agedReleases(a, aURL, http)
            let bytes = Array("old shared artifact".utf8) + Array(repeating: 1, count: 2048)
            let again = try await http.send("POST", bURL + "/v1/artifacts", token: b.operatorToken, body: Data(bytes))
            #expect(again.status == 200 || again.status == 201)
            let answer = try await http.send("POST", aURL + "/v1/artifacts/prune", token: a.operatorToken, body: Data(#"{"keepReleases": 1}"#.utf8))
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            let removed = FleetDocument.array(try JSONValue.parse(Array(answer.body)).object?["removed"])
            #expect(removed.isEmpty, "\(removed)")
            #expect(try await a.store.artifactBlobSize(old.sha256.hex) == Int64(bytes.count))
        }
    }

    /// B holds a checked copy of `old` (it served it), so its own check passes; a prune through A removes the shared
    /// rows; a release naming `old` published through B is refused inside its transaction, not stored naming bytes the
    /// database lost.
    @Test func aPublishThroughBOfWhatAPrunedIsRefusedInItsTransaction() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let (old, _) = try await Self.agedReleases(a, aURL, http)
            #expect(try await http.send("GET", bURL + "/v1/artifacts/\(old.sha256.hex)", token: b.operatorToken).status == 200)
            // Published through B once: B now knows the database holds it, and asks no more.
            let first = try b.envelope(ControllerFixture.release(serial: 3, artifact: old))
            #expect(try await http.send("POST", bURL + "/v1/releases", token: b.operatorToken, body: Data(first.readableBytesView)).status == 201)
            try await Self.publish(4, artifact: try await Self.upload(Array("newest".utf8), through: a, aURL, http), through: a, aURL, http)
            let stale = StoredTime.milliseconds(Date().addingTimeInterval(-2 * 86_400))
            try await a.store.readDB.raw("UPDATE artifacts SET created_at = \(bind: stale) WHERE sha256 = \(bind: old.sha256.hex)").run()
            let answer = try await http.send("POST", aURL + "/v1/artifacts/prune", token: a.operatorToken, body: Data(#"{"keepReleases": 1}"#.utf8))
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            #expect(try await a.store.artifactBlobSize(old.sha256.hex) == nil, "the prune through A removed the shared rows")

            let envelope = try b.envelope(ControllerFixture.release(serial: 5, artifact: old))
            let refused = try await http.send("POST", bURL + "/v1/releases", token: b.operatorToken, body: Data(envelope.readableBytesView))
            #expect(refused.status == 422)
            let message = try JSONValue.parse(Array(refused.body)).object?["message"]
            #expect(message.map { "\($0)".contains("removed by a prune") } == true, "\(String(decoding: refused.body, as: UTF8.self))")
            #expect(try await b.store.release(service: "api", serial: 5) == nil)
        }
    }
}
