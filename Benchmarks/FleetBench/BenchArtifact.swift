import CArchive
import Foundation

/// The release the benchmark publishes: a tar.gz with one small node app (written with libarchive) and a YAML
/// ecosystem file (YAML, so `publish` does not start node: the publish time is the controller's, not node's).
enum BenchArtifact {
    /// Writes `app.tar.gz` and `ecosystem.yaml` into `directory`; returns their paths.
    static func write(into directory: String) throws -> (artifact: String, ecosystem: String) {
        let artifact = directory + "/app.tar.gz"
        let script = Array("require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT || 3000)\n".utf8)
        guard let archive = archive_write_new() else { throw BenchError("archive_write_new failed") }
        defer { archive_write_free(archive) }
        archive_write_set_format_pax_restricted(archive)
        archive_write_add_filter_gzip(archive)
        guard archive_write_open_filename(archive, artifact) == ARCHIVE_OK else {
            throw BenchError("cannot write \(artifact): \(String(cString: archive_error_string(archive)))")
        }
        guard let entry = archive_entry_new() else { throw BenchError("archive_entry_new failed") }
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname(entry, "server.js")
        archive_entry_set_filetype(entry, FERRY_AE_IFREG)
        archive_entry_set_perm(entry, 0o644)
        archive_entry_set_size(entry, la_int64_t(script.count))
        guard archive_write_header(archive, entry) == ARCHIVE_OK,
            script.withUnsafeBytes({ archive_write_data(archive, $0.baseAddress, $0.count) }) == script.count,
            archive_write_close(archive) == ARCHIVE_OK
        else {
            throw BenchError("cannot write \(artifact): \(String(cString: archive_error_string(archive)))")
        }
        let ecosystem = directory + "/ecosystem.yaml"
        try "apps:\n  - name: api\n    script: server.js\n".write(toFile: ecosystem, atomically: true, encoding: .utf8)
        return (artifact, ecosystem)
    }
}
