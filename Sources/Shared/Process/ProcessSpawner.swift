import Glibc

/// Starts programs with `posix_spawn`: no `fork()` from this multithreaded process, signal dispositions and mask
/// reset to defaults in the child, no descriptor leaked beyond the three standard ones.
///
/// The one spawn primitive of the package: `CommandRunner` (run to completion) and the builtin supervisor (its
/// long-running apps, its detached daemon) both start their children here. Whoever spawns a child reaps it, by pid:
/// nothing here or anywhere else waits for "any child" (`waitpid(-1)`), which would steal other owners' children.
package enum ProcessSpawner {
    /// Where one of the child's standard streams goes.
    package enum Stream: Sendable {
        /// `/dev/null`.
        case null
        /// A descriptor of this process, duplicated onto the stream.
        case descriptor(Int32)
        /// A file opened for appending (created 0600 when missing).
        case appending(path: String)
    }

    /// How the child is placed among sessions and process groups.
    package enum Grouping: Sendable {
        /// A new process group led by the child, so signals to `-pid` reach everything it starts.
        case newProcessGroup
        /// A new session (and group): detached from the caller's terminal and job control, like a daemon.
        case newSession
    }

    /// Everything `spawn` needs.
    package struct Request: Sendable {
        /// Absolute path of the program (no `PATH` lookup).
        package var executable: String
        /// `argv`, including `argv[0]`.
        package var arguments: [String]
        /// The child's whole environment: nothing of this process's is passed on.
        package var environment: [String: String]
        /// Directory the child starts in, resolved (symlinks included) when the child is spawned. Default `nil`: this
        /// process's.
        package var workingDirectory: String?
        /// Default `/dev/null`.
        package var standardInput: Stream
        /// Default `/dev/null`.
        package var standardOutput: Stream
        /// Default `/dev/null`.
        package var standardError: Stream
        /// Default: a new process group.
        package var grouping: Grouping

        package init(
            executable: String,
            arguments: [String],
            environment: [String: String],
            workingDirectory: String? = nil,
            standardInput: Stream = .null,
            standardOutput: Stream = .null,
            standardError: Stream = .null,
            grouping: Grouping = .newProcessGroup
        ) {
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
            self.workingDirectory = workingDirectory
            self.standardInput = standardInput
            self.standardOutput = standardOutput
            self.standardError = standardError
            self.grouping = grouping
        }
    }

    /// Starts the program and returns its pid; the caller reaps it. Throws `.failed` with the `errno` of the failing
    /// step (`ENOENT` for a missing program or working directory, `EACCES`, `ENOEXEC` for a script without `#!`).
    package static func spawn(_ request: Request) throws(SpawnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        func failed(_ code: Int32) -> SpawnError {
            .failed(
                executable: request.executable,
                arguments: request.arguments,
                workingDirectory: request.workingDirectory,
                errno: code
            )
        }
        if let directory = request.workingDirectory {
            let result = try GlibcExtensions.addChangeDirectory(&actions, directory)
            guard result == 0 else { throw failed(result) }
        }
        for (stream, target) in [
            (request.standardInput, STDIN_FILENO), (request.standardOutput, STDOUT_FILENO),
            (request.standardError, STDERR_FILENO),
        ] {
            let result: Int32 =
                switch stream {
                case .null:
                    posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
                case .descriptor(let fd):
                    posix_spawn_file_actions_adddup2(&actions, fd, target)
                case .appending(let path):
                    posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_APPEND | O_CREAT, 0o600)
                }
            guard result == 0 else { throw failed(result) }
        }
        // After the dup2 actions, so the descriptors they copy from are still open when they run.
        let closed = GlibcExtensions.addCloseFrom(&actions, 3)
        guard closed == 0 else { throw failed(closed) }

        var defaultSignals = sigset_t()
        sigfillset(&defaultSignals)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF) | Int32(POSIX_SPAWN_SETSIGMASK)
        switch request.grouping {
        case .newProcessGroup:
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        case .newSession:
            flags |= GlibcExtensions.spawnSetSessionFlag
        }
        let flagged = posix_spawnattr_setflags(&attributes, Int16(flags))
        guard flagged == 0 else { throw failed(flagged) }

        let argv = request.arguments.map { strdup($0) } + [nil]
        let envp = request.environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, request.executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw failed(result) }
        return pid
    }
}

/// Why `ProcessSpawner.spawn` started nothing.
package enum SpawnError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `posix_spawn` (or one of its set-up steps) refused, with this `errno`.
    case failed(executable: String, arguments: [String], workingDirectory: String?, errno: Int32)
    /// A glibc function spawning needs is missing (glibc older than 2.29).
    case missingLibcFunction(name: String)

    package var description: String {
        switch self {
        case .failed(let executable, let arguments, let workingDirectory, let errno):
            "cannot start \(executable) (argv \(arguments)\(workingDirectory.map { ", cwd \($0)" } ?? "")): \(SystemErrorText.describe(errno))"
        case .missingLibcFunction(let name):
            "this C library lacks \(name) (glibc 2.29 or later is required to start processes)"
        }
    }
}

/// glibc functions and flags that Swift's Glibc module does not expose (they are declared only under
/// `_GNU_SOURCE`, or only by newer headers). They are looked up at run time, the way swift-subprocess does for the
/// same functions.
package enum GlibcExtensions {
    /// `POSIX_SPAWN_SETSID` (glibc 2.26+): the child calls `setsid()`.
    package static let spawnSetSessionFlag: Int32 = 0x80

    private typealias AddChangeDirectory = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private typealias PidFDOpen = @convention(c) (pid_t, UInt32) -> Int32
    private typealias Accept4 = @convention(c) (Int32, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<socklen_t>?, Int32) -> Int32

    // Addresses as integers: function pointers are not Sendable, integers are.
    private static let addChangeDirectoryAddress = address(of: "posix_spawn_file_actions_addchdir_np")
    private static let addCloseFromAddress = address(of: "posix_spawn_file_actions_addclosefrom_np")
    private static let pidFDOpenAddress = address(of: "pidfd_open")
    private static let accept4Address = address(of: "accept4")

    /// `posix_spawn_file_actions_addchdir_np` (glibc 2.29+). Without it a child cannot start in its own directory,
    /// so its absence is an error rather than a silent fallback.
    static func addChangeDirectory(_ actions: inout posix_spawn_file_actions_t, _ path: String) throws(SpawnError) -> Int32 {
        guard let raw = addChangeDirectoryAddress.flatMap(UnsafeRawPointer.init(bitPattern:)) else {
            throw .missingLibcFunction(name: "posix_spawn_file_actions_addchdir_np")
        }
        let function = unsafeBitCast(raw, to: AddChangeDirectory.self)
        return function(&actions, path)
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+); a no-op returning 0 on older systems, where the
    /// package's own descriptors are all close-on-exec anyway.
    static func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) -> Int32 {
        guard let raw = addCloseFromAddress.flatMap(UnsafeRawPointer.init(bitPattern:)) else { return 0 }
        let function = unsafeBitCast(raw, to: AddCloseFrom.self)
        return function(&actions, lowest)
    }

    /// Whether `pidfd_open` (glibc 2.36+) exists here.
    static var hasPidFD: Bool { pidFDOpenAddress != nil }

    /// `pidfd_open(pid, 0)`: a descriptor that polls readable once the process has exited (it does not reap it).
    /// `nil` where glibc lacks the function or the kernel refuses (older than 5.3).
    static func openPidFD(_ pid: pid_t) -> Int32? {
        guard let raw = pidFDOpenAddress.flatMap(UnsafeRawPointer.init(bitPattern:)) else { return nil }
        let function = unsafeBitCast(raw, to: PidFDOpen.self)
        let fd = function(pid, 0)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }

    /// Accepts a connection on `listener` with close-on-exec set atomically (`accept4(..., SOCK_CLOEXEC)`: a process
    /// spawned at that moment by any other thread cannot inherit it), or with `accept` then `fcntl` where glibc lacks
    /// `accept4`. Returns what they return: the descriptor, or -1 with `errno` set.
    package static func acceptCloseOnExec(_ listener: Int32) -> Int32 {
        guard let raw = accept4Address.flatMap(UnsafeRawPointer.init(bitPattern:)) else {
            let fd = accept(listener, nil, nil)
            if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return fd
        }
        let function = unsafeBitCast(raw, to: Accept4.self)
        return function(listener, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }

    private static func address(of symbol: String) -> Int? {
        guard let handle = dlopen(nil, RTLD_NOW), let pointer = dlsym(handle, symbol) else { return nil }
        return Int(bitPattern: pointer)
    }
}
