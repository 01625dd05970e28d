import Shared

/// Why a step of an install did not happen. Quoted in the service's message and the pass's problems (masked before
/// they leave the agent), as the underlying error says it.
enum InstallError: Error, CustomStringConvertible {
    /// The release names an app another service on this instance already runs: refused before anything is touched.
    /// `logsOf`: the other service's app whose name differs but whose PM2 log files are the same (`PM2App.logName`).
    case appNameClash(app: String, service: String, logsOf: String? = nil)
    /// The artifact could not be downloaded or verified.
    case download(ArtifactFetchError)
    /// A newer serial of the service arrived during the download, which was cancelled.
    case superseded(by: Int64)
    /// The artifact could not be extracted into its release directory.
    case extraction(ArchiveError)
    /// The generated ecosystem file could not be written.
    case ecosystem(AtomicFile.Failure)
    /// The `current` symlink could not be switched.
    case currentLink(AtomicFile.Failure)
    /// The process manager could not be asked (its table unreadable: a wedged or restarting daemon) when the release's
    /// apps were to be applied: nothing of them was done. Not the release's fault: tried again after a wait.
    case processManager(String)

    /// Whether trying again at once would fail the same way: bytes that do not match what the release signed (their
    /// size or digest), an archive the extractor refuses or cannot read (a format it does not take, a file where the
    /// archive made a directory), a file operation of the extraction that failed, a full disk that more free bytes would
    /// not help; a store that refuses the download (an answer of 4xx but 408 and 429: an expired presigned URL, a
    /// missing object, a token it does not take) or whose certificate does not verify. Backed off
    /// (`Reconciler.installBackoff`): each pass re-hashed the cached artifact, extracted it, saved the state twice and
    /// sent a report, once a poll interval, until a new serial came; a refused download was asked again, and reported,
    /// every poll interval by every agent, in step. A store that does not answer (a connection, a timeout, a 5xx) is
    /// tried again at the next pass; a tree that did not fit waits for the space it needs (`Reconciler.spaceWaits`).
    var repeatsTheSameWay: Bool {
        if isTheReleasesFault { return true }
        return switch self {
        case .extraction(let error):
            switch error {
            case .unreadable, .writeFailed, .fileSystem: true
            // A tree that did not fit in the bytes free waits for them (`Reconciler.spaceWaits`). With as many bytes free
            // as it declares, or free space that cannot be read, more bytes would not help (inodes ran out, a quota,
            // blocks and directories the declared sizes leave out): backed off.
            case .noSpace(_, let needed, let available): available.map { $0 >= needed } ?? true
            case .corrupt, .empty, .unsafePath, .linkEscapes, .unsupportedEntryType, .tooManyEntries, .tooLarge, .destinationExists, .cancelled:
                false
            }
        case .download(.download(_, let failure)):
            switch failure {
            case .unexpectedStatus: !failure.isTransient
            case .tls: failure.isCertificateRefusal
            default: false
            }
        default: false
        }
    }

    /// Whether the release itself cannot be installed, here or anywhere: its artifact's bytes are not what it signed
    /// (their size or digest), or its archive is one the extractor refuses (damaged, empty, a path or link leaving the
    /// tree, an entry type, too many entries or bytes). Recorded as a refusal of the serial (`Reconciler.install`), so
    /// a rollout counts it as a failure; a store that does not answer yet, or this instance's own disk, counts nothing
    /// and is tried again.
    var isTheReleasesFault: Bool {
        switch self {
        case .download(.tooLarge), .download(.sizeMismatch), .download(.digestMismatch): true
        case .extraction(let error):
            switch error {
            case .corrupt, .empty, .unsafePath, .linkEscapes, .unsupportedEntryType, .tooManyEntries, .tooLarge: true
            case .unreadable, .writeFailed, .fileSystem, .noSpace, .destinationExists, .cancelled: false
            }
        default: false
        }
    }

    /// Whether the release is to blame only once the failure has repeated: bytes from the store that are not what the
    /// release signed (their size or digest). One such download may be the path's fault (a proxy or cache that served a
    /// damaged copy once, an object read while it was being replaced); two in a row, after the backoff's wait, are the
    /// release's (`Reconciler.mismatchedDownloads`). A refused archive is the release's at once: its bytes are the ones
    /// the release signed.
    var isTheReleasesFaultOnceRepeated: Bool {
        switch self {
        case .download(.tooLarge), .download(.sizeMismatch), .download(.digestMismatch): true
        default: false
        }
    }

    var description: String {
        switch self {
        case .appNameClash(let app, let service, nil): "app name \(app) is already used by service \(service) on this instance"
        case .appNameClash(let app, let service, let other?):
            "app \(app) would share the PM2 log files of app \(other) of service \(service) on this instance (PM2 names them "
                + "after the app, every character but letters, digits, ., - and \\ made a dash): rename one of them"
        case .download(let error): "\(error)"
        case .superseded(let newer): "superseded by serial \(newer) during the download"
        case .extraction(let error): "\(error)"
        case .ecosystem(let error): "\(error)"
        case .currentLink(let error): "\(error)"
        case .processManager(let reason): "the process manager could not be asked to run it: \(reason)"
        }
    }
}
