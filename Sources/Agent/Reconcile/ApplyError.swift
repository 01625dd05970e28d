/// Why a service's apps were not all brought to how they should run. Apps that succeeded stay as they are.
enum ApplyError: Error, CustomStringConvertible {
    /// The process manager's table could not be read, so nothing was done.
    case tableUnreadable(any Error)
    /// Some apps failed (in the order they were applied), then some deletes of apps the release no longer has.
    case appsFailed([AppActionFailure], removals: [AppActionFailure])

    var description: String {
        switch self {
        case .tableUnreadable(let error):
            "cannot read the process table: \(error)"
        case .appsFailed(let failures, let removals):
            (failures.map { "\($0.app): \($0)" } + removals.map { "\($0.app): delete failed: \($0)" }).joined(separator: "; ")
        }
    }
}

/// The process manager did not carry out one app action.
struct AppActionFailure: Error, CustomStringConvertible {
    var app: String
    var action: AppAction
    /// The process manager's error (it keeps the command, exit status and output).
    var cause: any Error

    /// The cause as the process manager said it (the caller names the app and the action around it).
    var description: String { "\(cause)" }
}
