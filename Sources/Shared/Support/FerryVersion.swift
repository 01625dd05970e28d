/// The version every Ferry binary reports (`--version`, status reports, the `User-Agent`).
package enum FerryVersion {
    package static let current = "0.1.0"
}
