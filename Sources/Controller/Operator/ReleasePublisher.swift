import Foundation
import Shared

/// The steps `publish` and `rollback` share: find the next serial, sign locally, post.
struct ReleasePublisher {
    /// What to tell the operator when the controller stored the release awaiting approval (fewer signatures than the
    /// trust root's release threshold): no agent receives it yet. `nil` when it is live.
    static func approvalNote(_ answer: JSONValue, service: String, serial: Int64) -> String? {
        guard answer.object?["awaitingApproval"] == .bool(true) else { return nil }
        let signed = answer.object?["signedBy"].flatMap { if case .array(let keys) = $0 { keys.count } else { nil } } ?? 0
        let required: Int64 = answer.object?["signaturesRequired"].flatMap { if case .integer(let count) = $0 { count } else { nil } } ?? 0
        return "awaiting approval: signed by \(signed) of the \(required) release key(s) required; no agent receives it until "
            + "`ferry-controller approve --service \(service) --serial \(serial) --key KEY` adds the missing signature(s)"
    }

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
        // A controller stores serials up to 2^53 (`Release.maximumSerial`); anything else is a broken or hostile answer,
        // and `Int64.max + 1` trapped.
        guard (1..<Release.maximumSerial).contains(serial) else {
            throw ClientError.badResponse(
                method: "GET",
                url: "/v1/services/\(service)/releases",
                reason: "latest serial \(serial) is outside 1...\(Release.maximumSerial - 1)"
            )
        }
        return serial + 1
    }

    /// Signs `release` with every key and publishes it. The answer is the controller's summary of the release.
    ///
    /// A request that may have arrived without its answer coming back (a timeout, a broken transfer, a 5xx: a proxy's 502
    /// when the controller's answer was lost) is tried again with the same signed document 1 s, 2 s and 4 s later: a controller that stored it the first time answers the repeat `200` with the
    /// stored release (`"repeated": true`), so a lost answer neither fails the publish nor publishes it twice. Once an
    /// attempt may have arrived, a controller that cannot be reached at all (restarting after it stored the release)
    /// is asked again too, up to six attempts (31 s): the first refused connection used to fail the publish at once,
    /// and a CI job run again then published the same content as the next serial. When the last attempt fails, the
    /// error says the release may be stored.
    /// - Parameter query: rollout parameters for `POST /v1/releases` (`strategy=...&waveStableSeconds=...`).
    func publish(_ release: Release, keys: [SigningKey], query: String = "", retryPause: Duration = .seconds(1)) async throws -> JSONValue {
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: keys)
        var attempt = 0
        var mayBeStored = false
        while true {
            attempt += 1
            do {
                return try await client.postJSON(
                    "/v1/releases" + (query.isEmpty ? "" : "?\(query)"),
                    body: envelope.encoded(),
                    expecting: [200, 201]
                )
            } catch {
                // `error` is a ClientError (typed throws).
                if error.code == "stale_serial" {
                    throw CLIError(
                        "\(error)\n(another release of \(release.service) was published meanwhile; run the command again to take the next serial)"
                    )
                }
                let transient = Self.mayBeTransient(error)
                mayBeStored = mayBeStored || transient
                guard transient || (mayBeStored && Self.mayBeReachedLater(error)), attempt < (mayBeStored ? 6 : 4) else {
                    guard mayBeStored else { throw error }
                    throw CLIError(
                        "\(error)\n(serial \(release.serial) of \(release.service) may be stored: an earlier attempt may have reached the "
                            + "controller before its answer was lost. Check `ferry-controller releases --service \(release.service)` before "
                            + "publishing again, which would publish the same content as serial \(release.serial + 1))"
                    )
                }
                Console.error("warning: publish attempt \(attempt) failed (\(error)); trying again with the same signed release")
                try await Task.sleep(for: retryPause * (1 << (attempt - 1)))
            }
        }
    }

    /// The request may have arrived and its answer was lost, or the controller failed for now (5xx): the release may or
    /// may not be stored, and asking again tells. Not a controller that could not be reached or proven at all.
    static func mayBeTransient(_ error: ClientError) -> Bool {
        switch error {
        case .transport(_, _, _, let mayHaveArrived, _): mayHaveArrived
        case .api(_, _, let status, _, _): status >= 500
        case .badResponse, .local: false
        }
    }

    /// The controller could not be reached now, in a way that may pass (a refused connection, a timeout), not one that
    /// fails the same way every time (a certificate that does not verify).
    static func mayBeReachedLater(_ error: ClientError) -> Bool {
        if case .transport(_, _, _, _, let mayPass) = error { return mayPass }
        return false
    }
}
