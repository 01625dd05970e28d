import Dispatch
import Logging
import Shared
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The agent's archive extractor (Agent/Install/ArchiveExtractor.swift) on arbitrary bytes as the artifact, extracting
/// into `<root>/box/release` of a private temporary directory. Never crash; and after every input, whether it was
/// accepted or refused:
/// - nothing outside `<root>/box/release` changed: the rest of `<root>` (a decoy directory next to the box, the working
///   directory the process runs in) is exactly as before, and `<root>/box` holds nothing but `release` (no staging
///   directory left behind);
/// - nothing was written at the fixed absolute path the seed corpus aims at (`/tmp/ferry-fuzz-escape`);
/// - a refused archive left no `release`; an accepted one holds only regular files, directories and symbolic links
///   whose targets resolve inside it, with no setuid, setgid, sticky or world-writable bit.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzArchive(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let fixture = Fixture.shared
    let archive = fixture.root + "/archive.bin"
    let fd = open(archive, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    FuzzCheck.require(fd >= 0, "cannot write \(archive)")
    FuzzCheck.require(size == 0 || write(fd, data, size) == size, "short write of \(archive)")
    close(fd)

    let destination = fixture.root + "/box/release"
    let result = fixture.extract(archive, into: destination)

    FuzzCheck.require(Tree.snapshot(fixture.root, skipping: [destination, archive]) == fixture.baseline, "something outside the destination changed")
    var info = stat()
    FuzzCheck.require(lstat(Fixture.escapePath, &info) != 0, "an entry was written at \(Fixture.escapePath)")
    let box = (try? FileManager.default.contentsOfDirectory(atPath: fixture.root + "/box")) ?? []
    switch result {
    case .success:
        FuzzCheck.require(box == ["release"], "the box holds \(box) after an extraction")
        Tree.checkExtracted(destination)
        FuzzCheck.require(FileTree.remove(destination) == nil, "cannot remove \(destination)")
    case .failure(let error):
        FuzzCheck.require(box.isEmpty, "a refused archive (\(error)) left \(box)")
        FuzzCheck.require(!"\(error)".isEmpty, "a refusal without a reason")
    }
    return 0
}

private final class Fixture: Sendable {
    static let shared = Fixture()
    static let escapePath = "/tmp/ferry-fuzz-escape"

    /// `/dev/shm` (memory: the extractor fsyncs its parent directory) or `$TMPDIR`.
    let root: String
    let baseline: [String: String]
    let extractor: ArchiveExtractor

    private init() {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp")
        var template = Array("\(base)/ferry-fuzz-archive-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }
        FuzzCheck.require(made != nil, "mkdtemp failed under \(base)")
        root = String(cString: template)
        for directory in ["box", "decoy", "decoy/inner", "cwd"] { mkdir("\(root)/\(directory)", 0o755) }
        _ = FileManager.default.createFile(atPath: "\(root)/decoy/keep.txt", contents: Data("decoy\n".utf8))
        symlink("../decoy", "\(root)/cwd/decoy-link")
        // Relative paths handed to the C libraries resolve here, inside the watched tree.
        chdir("\(root)/cwd")
        baseline = Tree.snapshot(root, skipping: [])
        extractor = ArchiveExtractor(
            configuration: .init(maxEntries: 2_000, maxTotalBytes: 8 << 20, synchronize: false),
            logger: Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
        )
        // libFuzzer ends the process with exit(): remove the directory then.
        atexit { _ = FileTree.remove(Fixture.shared.root) }
    }

    /// Runs the asynchronous extraction to its end (the fuzzer's callback is synchronous).
    func extract(_ archive: String, into destination: String) -> Result<ArchiveExtractor.Summary, ArchiveError> {
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        let extractor = self.extractor
        Task {
            do throws(ArchiveError) {
                box.set(.success(try await extractor.extract(archive, into: destination)))
            } catch {
                box.set(.failure(error))
            }
            done.signal()
        }
        done.wait()
        return box.value
    }
}

private final class ResultBox: Sendable {
    private let result = Mutex<Result<ArchiveExtractor.Summary, ArchiveError>?>(nil)
    func set(_ value: Result<ArchiveExtractor.Summary, ArchiveError>) { result.withLock { $0 = value } }
    var value: Result<ArchiveExtractor.Summary, ArchiveError> {
        guard let value = result.withLock({ $0 }) else {
            FuzzCheck.require(false, "the extraction task ended without a result")
            fatalError()
        }
        return value
    }
}

private enum Tree {
    /// Every path under `root` with its type, mode, size and link target (paths in `skipping` and below left out).
    static func snapshot(_ root: String, skipping: Set<String>) -> [String: String] {
        var result: [String: String] = [:]
        func walk(_ path: String) {
            guard !skipping.contains(path) else { return }
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            // A directory's own size follows its entries (the box holds the release for a moment): not compared.
            let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
            var text = "mode=\(String(info.st_mode, radix: 8)) size=\(isDirectory ? 0 : info.st_size)"
            if (info.st_mode & S_IFMT) == S_IFLNK { text += " -> \(linkTarget(path))" }
            result[path] = text
            guard (info.st_mode & S_IFMT) == S_IFDIR else { return }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] { walk("\(path)/\(name)") }
        }
        walk(root)
        return result
    }

    /// Checks the tree an accepted archive produced.
    static func checkExtracted(_ destination: String) {
        guard let real = realpath(destination, nil) else {
            FuzzCheck.require(false, "the extracted tree \(destination) is gone")
            return
        }
        let base = String(cString: real)
        free(real)
        func walk(_ path: String) {
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            let kind = info.st_mode & S_IFMT
            FuzzCheck.require(kind == S_IFREG || kind == S_IFDIR || kind == S_IFLNK, "\(path) has type 0o\(String(kind, radix: 8))")
            if kind != S_IFLNK {
                FuzzCheck.require(info.st_mode & 0o7002 == 0, "\(path) has mode 0o\(String(info.st_mode & 0o7777, radix: 8))")
            }
            if kind == S_IFLNK, let resolved = realpath(path, nil) {
                let target = String(cString: resolved)
                free(resolved)
                FuzzCheck.require(target == base || target.hasPrefix(base + "/"), "\(path) -> \(linkTarget(path)) resolves to \(target), outside the tree")
            }
            guard kind == S_IFDIR else { return }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] { walk("\(path)/\(name)") }
        }
        walk(destination)
    }

    static func linkTarget(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        return length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
}
