import Foundation
import SQLKit
import Shared

// Trust roots and release approvals.
extension SQLiteControllerStore {
    func trustRoots() async throws -> [TrustRootRecord] {
        let rows = try await readDB.raw(
            "SELECT version, envelope, sha256, expires_at, published_by, published_at FROM trust_roots ORDER BY version"
        ).all()
        return try rows.map { row in
            let text = try row.decode(column: "envelope", as: String.self)
            let envelope: Envelope
            do {
                envelope = try Envelope.decode(Array(text.utf8))
            } catch {
                throw StoreError.corruptRow(table: "trust_roots", reason: "stored envelope: \(error)")
            }
            return TrustRootRecord(
                version: try row.decode(column: "version", as: Int64.self),
                envelope: envelope,
                sha256: try row.decode(column: "sha256", as: String.self),
                expiresAt: StoredTime.date(try row.decode(column: "expires_at", as: Int64.self)),
                publishedBy: try row.decode(column: "published_by", as: String.self),
                publishedAt: StoredTime.date(try row.decode(column: "published_at", as: Int64.self))
            )
        }
    }

    func latestTrustRootVersion() async throws -> Int64? {
        try await readDB.raw("SELECT MAX(version) AS v FROM trust_roots").first()?.decode(column: "v", as: Int64?.self) ?? nil
    }

    func insertTrustRoot(_ root: TrustRootRecord) async throws {
        let envelopeText = String(decoding: root.envelope.encoded(), as: UTF8.self)
        try await transaction { db in
            let latest = try await db.raw("SELECT MAX(version) AS v FROM trust_roots").first()?.decode(column: "v", as: Int64?.self) ?? nil
            if let latest, root.version != latest + 1 {
                throw StoreError.staleRootVersion(version: root.version, latest: latest)
            }
            try await db.raw(
                """
                INSERT INTO trust_roots (version, envelope, sha256, expires_at, published_by, published_at)
                VALUES (\(bind: root.version), \(bind: envelopeText), \(bind: root.sha256), \(bind: StoredTime.milliseconds(root.expiresAt)),
                        \(bind: root.publishedBy), \(bind: StoredTime.milliseconds(root.publishedAt)))
                """
            ).run()
        }
    }

    func recordApproval(_ approval: ReleaseApproval) async throws -> Bool {
        let envelopeText = String(decoding: approval.envelope.encoded(), as: UTF8.self)
        do {
            return try await transaction { db in
                let updated = try await db.raw(
                    """
                    UPDATE releases SET envelope = \(bind: envelopeText), signed_by = \(bind: Self.stringListText(approval.signedBy)),
                        signatures_required = \(bind: approval.signaturesRequired)
                    WHERE service = \(bind: approval.service) AND serial = \(bind: approval.serial)
                      AND signed_by = \(bind: Self.stringListText(approval.previousSignedBy))
                    RETURNING serial
                    """
                ).first()
                guard updated != nil else { return false }
                // The members the approval planned (the service's agents as it was checked) that are still enrolled as
                // it commits: one removed in between would be waited for for ever.
                let enrolled = try await self.enrolledAgentIDs(service: approval.service, in: db)
                guard try await Self.write(approval.transition, keepingMembers: enrolled, into: db) else {
                    // The rollout moved meanwhile (superseded, aborted, another approval): undo the signature update too.
                    throw ApprovalConflict()
                }
                var events = approval.transition.events
                let approved = approval.transition.rollout
                if approved.state != .awaitingApproval {
                    // Started: it replaces the rollout that went on while it awaited approval (a publish awaiting
                    // approval supersedes none that started), and hands out the stable serial as it is now (that
                    // rollout may have completed meanwhile).
                    let stable = try await Self.stableSerial(service: approval.service, below: approval.serial, in: db)
                    try await db.raw("UPDATE rollouts SET stable_serial = \(bind: stable) WHERE id = \(bind: approved.id)").run()
                    events += try await Self.supersede(
                        [.rolling, .paused, .halted],
                        service: approval.service,
                        below: approval.serial,
                        by: approved.version,
                        at: approved.updatedAt,
                        in: db
                    ).events
                }
                try await Self.insert(events, into: db)
                return true
            }
        } catch is ApprovalConflict {
            return false
        }
    }
}

/// Rolls back an approval's transaction whose rollout changed under it; reported as "not written".
private struct ApprovalConflict: Error {}
