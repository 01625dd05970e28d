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
}
