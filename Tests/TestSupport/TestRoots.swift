import Foundation
import Shared

/// Builds signed trust roots for tests.
package enum TestRoots {
    /// A root of `version` whose `root` role is `rootKeys` (threshold `rootThreshold`) and whose `release` role is
    /// `releaseKeys` (threshold `releaseThreshold`), signed by `signers` in order (the same key may appear twice).
    package static func root(
        version: Int64,
        expiresAt: Date = Date().addingTimeInterval(365 * 86_400),
        rootKeys: [SigningKey],
        rootThreshold: Int = 1,
        releaseKeys: [SigningKey],
        releaseThreshold: Int = 1,
        signers: [SigningKey],
        payloadType: String = Root.payloadType
    ) throws -> Envelope {
        let root = try Root.make(
            version: version,
            expiresAt: expiresAt,
            rootKeys: rootKeys.map(\.publicKey),
            rootThreshold: rootThreshold,
            releaseKeys: releaseKeys.map(\.publicKey),
            releaseThreshold: releaseThreshold
        )
        return try Envelope.sign(payload: root.payload(), payloadType: payloadType, with: signers)
    }

    /// A minimal valid release payload of `service`/`serial`, signed by `signers`.
    package static func release(service: String = "web", serial: Int64 = 1, signers: [SigningKey]) throws -> Envelope {
        let now = Date()
        let digest = SHA256.hash(Array("artifact \(serial)".utf8))
        let release = Release(
            service: service,
            serial: serial,
            version: "1.0.\(serial)",
            createdAt: now,
            expiresAt: now.addingTimeInterval(86_400),
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 10),
            pm2: PM2Config(apps: [PM2App(name: "\(service)-app", script: "server.js", options: [:])])
        )
        return try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: signers)
    }
}
