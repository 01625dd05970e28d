/// How PM2 splits a string given where a list of arguments is expected (`args`, `node_args`): quotes group words, as
/// its `Common.js` does. The operator's `publish` writes a list; an agent reads a string the same way, for a release made
/// by other means (it split at every space: `--title 'my app'` became three words).
package enum PM2Arguments {
    /// PM2's split of a string given where an array is expected (`args: "--port 3000 --name 'my app'"`).
    package static func split(_ text: String) -> [String] {
        var words: [String] = []
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character.isWhitespace {
                index = text.index(after: index)
                continue
            }
            // [^\s"'=]+="[^"]*" | [^\s"'=]+='[^']*' | "([^"]*)" | '([^']*)' | \S+
            var end = index
            while end < text.endIndex, !text[end].isWhitespace, !"\"'=".contains(text[end]) { end = text.index(after: end) }
            if end > index, end < text.endIndex, text[end] == "=" {
                let quoteIndex = text.index(after: end)
                if quoteIndex < text.endIndex, text[quoteIndex] == "\"" || text[quoteIndex] == "'" {
                    let quote = text[quoteIndex]
                    if let close = text[text.index(after: quoteIndex)...].firstIndex(of: quote) {
                        words.append(String(text[index...close]))
                        index = text.index(after: close)
                        continue
                    }
                }
            }
            if character == "\"" || character == "'" {
                if let close = text[text.index(after: index)...].firstIndex(of: character) {
                    let inner = String(text[text.index(after: index)..<close])
                    if !inner.allSatisfy(\.isWhitespace) { words.append(inner) }
                    index = text.index(after: close)
                    continue
                }
            }
            var token = index
            while token < text.endIndex, !text[token].isWhitespace { token = text.index(after: token) }
            let word = String(text[index..<token])
            if word.count >= 2, let first = word.first, first == "\"" || first == "'", word.last == first {
                words.append(String(word.dropFirst().dropLast()))
            } else {
                words.append(word)
            }
            index = token
        }
        return words.filter { !$0.allSatisfy(\.isWhitespace) }
    }
}
