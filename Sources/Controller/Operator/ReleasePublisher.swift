import Foundation
import Shared

/// The steps `publish` and `rollback` share: find the next serial, sign locally, post.
struct ReleasePublisher {
    let client: OperatorClient

    /// The service's releases as the controller lists them, newest first.
    func releases(of service: String, limit: Int = ReleaseRoutes.maximumListing) async throws -> [JSONValue] {
        let listing = try await client.getJSON("/v1/services/\(service)/releases?limit=\(limit)")
        guard case .object(let fields) = listing, case .array(let items)? = fields["releases"] else {
            throw ClientError.badResponse(method: "GET", url: "/v1/services/\(service)/releases", reason: "no releases array")
        }
        return items
    }

    /// One above the latest serial the controller has for `service` (1 for a new service).
    func nextSerial(of service: String) async throws -> Int64 {
        guard let latest = try await releases(of: service, limit: 1).first else { return 1 }
        guard case .object(let fields) = latest, case .integer(let serial)? = fields["serial"] else {
            throw ClientError.badResponse(method: "GET", url: "/v1/services/\(service)/releases", reason: "a release without a serial")
        }
        return serial + 1
    }

    /// Signs `release` with every key and publishes it. The answer is the controller's summary of the release.
    /// - Parameter query: rollout parameters for `POST /v1/releases` (`strategy=...&waveStableSeconds=...`).
    func publish(_ release: Release, keys: [SigningKey], query: String = "") async throws -> JSONValue {
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: keys)
        do {
            return try await client.postJSON("/v1/releases" + (query.isEmpty ? "" : "?\(query)"), body: envelope.encoded(), expecting: [201])
        } catch {
            // `error` is a ClientError (typed throws).
            guard error.code == "stale_serial" else { throw error }
            throw CLIError("\(error)\n(another release of \(release.service) was published meanwhile; run the command again to take the next serial)")
        }
    }
}
