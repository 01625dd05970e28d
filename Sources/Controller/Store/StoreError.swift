import Foundation
import Shared

/// Why the store refused or failed an operation.
enum StoreError: Error, CustomStringConvertible, Equatable {
    /// A release's serial is not above the latest stored for its service.
    case staleSerial(service: String, serial: Int64, latest: Int64)
    /// A release names an artifact the database does not hold (removed by a prune meanwhile).
    case unknownArtifact(sha256: String)
    /// The database was written by a newer Ferry whose schema this binary does not know.
    case schemaTooNew(path: String, found: Int, known: Int)
    /// The database could not be opened or prepared.
    case cannotOpen(path: String, reason: String)
    /// A stored value could not be read back (hand-edited or corrupted database).
    case corruptRow(table: String, reason: String)
    /// An agent id that does not exist.
    case unknownAgent(String)
    /// Enrolment of a name that is taken, without `replace`.
    case agentExists(name: String, id: String)
    /// Enrolment offering the digest of a token another agent holds (`EnrollRequest.tokenSHA256`).
    case tokenInUse
    /// A token the store refuses to create (a programming error of the caller).
    case invalidToken(String)
    /// Enrolment of an EC2 instance that another agent was enrolled on.
    case instanceEnrolled(instanceID: String, name: String)
    /// The attested instance was enrolled before, as agent `name`, since removed: an enrollment token enrolls it no more.
    case instanceEnrolledBefore(instanceID: String, name: String)
    /// An enrollment token that can no longer be used.
    case tokenUnusable(id: String, reason: TokenUnusableReason)
    /// A trust root whose version is not one above the highest stored.
    case staleRootVersion(version: Int64, latest: Int64)
    /// The database did not give a connection in time (down, failing over, or every pooled connection busy).
    case unavailable(location: String, waited: Duration)
    /// A statement got no answer in time (its statement timeout plus the connect timeout): the database or the network to
    /// it went silent. Its connection was closed, so the transaction it belonged to was not committed by this call (a
    /// `COMMIT` already on its way may still have been applied).
    case unresponsive(location: String, waited: Duration)

    var description: String {
        switch self {
        case .staleSerial(let service, let serial, let latest):
            "serial \(serial) of service \(service) is not above the latest published serial \(latest)"
        case .unknownArtifact(let sha256):
            "artifact \(sha256) is not stored in the database (a prune removed it); upload it again"
        case .schemaTooNew(let path, let found, let known):
            "\(path): database schema version \(found) is newer than this ferry-controller knows (\(known)); upgrade the binary"
        case .cannotOpen(let path, let reason):
            "\(path): cannot open the database: \(reason)"
        case .corruptRow(let table, let reason):
            "a row of table \(table) cannot be read: \(reason)"
        case .unknownAgent(let id):
            "no agent with id \(id)"
        case .agentExists(let name, let id):
            "an agent named \(name) is already enrolled (id \(id))"
        case .instanceEnrolled(let instanceID, let name):
            "instance \(instanceID) is already enrolled as agent \(name)"
        case .instanceEnrolledBefore(let instanceID, let name):
            "instance \(instanceID) was enrolled before, as agent \(name), since removed"
        case .tokenInUse:
            "another agent holds the token this enrolment offers"
        case .invalidToken(let reason):
            "cannot create the token: \(reason)"
        case .tokenUnusable(let id, let reason):
            "token \(id) \(reason)"
        case .staleRootVersion(let version, let latest):
            "trust root version \(version) is not the next one: version \(latest) is the newest stored, the next must be \(latest + 1)"
        case .unavailable(let location, let waited):
            "\(location): no database connection within \(waited) (the database is down, failing over, or busy); retry shortly"
        case .unresponsive(let location, let waited):
            "\(location): the database did not answer within \(waited); the connection was closed (the database or the network to it is down); retry shortly"
        }
    }
}

/// Why a token cannot be used.
enum TokenUnusableReason: Sendable, Equatable, CustomStringConvertible {
    case unknown
    case revoked(at: Date)
    case expired(at: Date)
    case usedUp(maxUses: Int)

    var description: String {
        switch self {
        case .unknown: "no longer exists"
        case .revoked(let at): "was revoked at \(Timestamp.format(at))"
        case .expired(let at): "expired at \(Timestamp.format(at))"
        case .usedUp(let maxUses): "has been used for all of its \(maxUses) enrolment(s)"
        }
    }
}

extension StoreError {
    /// The database and how long was waited, when this error is an outage (`unavailable`, `unresponsive`): answered
    /// 503 with `Retry-After`, not 500.
    var outage: (location: String, waited: Duration)? {
        switch self {
        case .unavailable(let location, let waited), .unresponsive(let location, let waited): (location, waited)
        default: nil
        }
    }

    var isOutage: Bool { outage != nil }
}
