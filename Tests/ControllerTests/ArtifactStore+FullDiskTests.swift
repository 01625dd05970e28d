import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Shared
import TestSupport
import Testing

@testable import Controller

/// An upload the controller cannot store, on a real full file system (a small tmpfs the test mounts; skipped with the
/// reason printed when it cannot): 507 `insufficient_storage` naming the directory and what is needed, no partial file
/// left in the artifact directory or its `tmp/`, the space given back, and the same upload stored once there is room.
@Suite("Artifact uploads on a full disk", .serialized)
struct ArtifactStoreFullDiskTests {
    typealias Fixture = ControllerFixture

    /// One upload against the full disk.
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        /// Bytes of the upload.
        var size: Int
        /// Whether the request declares its size (`Content-Length`): refused before the body is read, or when the
        /// disk fills up under the write.
        var declaresSize: Bool
        /// Free bytes left on the file system before the upload.
        var leaving: Int64
        var expectedStatus: HTTPResponse.Status
        var expectedCode: String?

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "declared size over the free space: refused before the body is stored",
            size: 3 << 20,
            declaresSize: true,
            leaving: 1 << 20,
            expectedStatus: .insufficientStorage,
            expectedCode: "insufficient_storage"
        ),
        Case(
            name: "no declared size: the disk fills up during the write",
            size: 3 << 20,
            declaresSize: false,
            leaving: 1 << 20,
            expectedStatus: .insufficientStorage,
            expectedCode: "insufficient_storage"
        ),
        Case(
            name: "an upload that fits is stored",
            size: 256 << 10,
            declaresSize: true,
            leaving: 1 << 20,
            expectedStatus: .created,
            expectedCode: nil
        ),
    ]

    @Test(arguments: cases)
    func uploadOnAFullDisk(_ row: Case) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-full-disk") { root in
            let disk = try SmallFileSystem.mount(at: root.appendingPathComponent("data").path, megabytes: 8)
            defer { disk.unmount() }
            try await Fixture.with(directory: URL(fileURLWithPath: disk.path)) { fixture in
                try await fixture.withRouter { client in
                    let bytes = (0..<row.size).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
                    let digest = SHA256.hash(bytes)
                    // The database shares the disk, and its WAL is copied into the file by a background checkpoint once
                    // a second: done here first, so that copy is not counted as space the upload kept.
                    let store = try #require(fixture.controller.core.store as? SQLControllerStore)
                    try await store.readDB.raw("PRAGMA wal_checkpoint(PASSIVE)").run()
                    try disk.fill(leaving: row.leaving)
                    let before = disk.available
                    var headers = Fixture.bearer(fixture.operatorToken)
                    if row.declaresSize { headers[.contentLength] = String(bytes.count) }
                    let response = try await client.execute(uri: "/v1/artifacts", method: .post, headers: headers, body: ByteBuffer(bytes: bytes))

                    #expect(response.status == row.expectedStatus)
                    #expect(Fixture.errorCode(response) == row.expectedCode)
                    let artifacts = fixture.controller.core.artifacts
                    let leftovers = try FileManager.default.contentsOfDirectory(atPath: disk.path + "/artifacts/tmp")
                    #expect(leftovers.isEmpty, "no partial upload is kept: \(leftovers)")
                    guard row.expectedStatus == .insufficientStorage else {
                        #expect(artifacts.size(of: digest) == Int64(bytes.count))
                        return
                    }
                    #expect(artifacts.size(of: digest) == nil)
                    let message = try Fixture.json(response).object?["message"].flatMap { if case .string(let text) = $0 { text } else { nil } } ?? ""
                    #expect(
                        message.hasPrefix("no space left on \(disk.path)/artifacts: need \(DiskSpace.megabytes(Int64(bytes.count)))"),
                        "the message names the directory and what is needed: \(message)"
                    )
                    #expect(message.contains("free space on the controller and upload again"))
                    // The space the partial file took was given back (tmpfs accounts a page or two of metadata).
                    #expect(disk.available >= before - (64 << 10), "free before \(before), after \(disk.available)")

                    // Once there is room, the same upload is stored.
                    disk.free()
                    let again = try await client.execute(uri: "/v1/artifacts", method: .post, headers: headers, body: ByteBuffer(bytes: bytes))
                    #expect(again.status == .created)
                    #expect(artifacts.size(of: digest) == Int64(bytes.count))
                }
            }
        }
    }

    /// The same over real sockets: the 507 reaches an HTTP client that is still sending the body.
    @Test func liveUploadOnAFullDiskGets507() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-full-disk") { root in
            let disk = try SmallFileSystem.mount(at: root.appendingPathComponent("data").path, megabytes: 8)
            defer { disk.unmount() }
            try await Fixture.with(directory: URL(fileURLWithPath: disk.path)) { fixture in
                try await fixture.withLiveServer { baseURL in
                    try disk.fill(leaving: 1 << 20)
                    let bytes = [UInt8](repeating: 7, count: 3 << 20)
                    let response = try await HTTPClient().send(
                        HTTPClient.Request(
                            method: .post,
                            url: "\(baseURL)/v1/artifacts",
                            headers: ["Authorization": "Bearer \(fixture.operatorToken)"],
                            body: bytes
                        )
                    )
                    #expect(response.status == 507)
                    let body = String(decoding: response.body, as: UTF8.self)
                    #expect(body.contains("insufficient_storage") && body.contains("no space left on"), "\(body)")
                    let leftovers = try FileManager.default.contentsOfDirectory(atPath: disk.path + "/artifacts/tmp")
                    #expect(leftovers.isEmpty)
                }
            }
        }
    }
}
