// Print, as JSON of hex strings, updates and state vectors that real Yjs writes: every shared
// type and content kind a browser editor produces, from several clients, merged and diffed.
// Used by test_interop.py to check the server's structural validator accepts all of them.

import * as Y from 'yjs'

const updates = []
const stateVectors = []
const hex = (bytes) => Buffer.from(bytes).toString('hex')

const docs = [new Y.Doc(), new Y.Doc(), new Y.Doc()]
docs.forEach((doc) => doc.on('update', (update) => updates.push(hex(update))))

const [a, b, c] = docs
const text = a.getText('content')
text.insert(0, 'Hello wörld 😀 ')
text.insert(6, 'big', { bold: true, color: '#f00' })
text.format(0, 5, { italic: true })
text.insertEmbed(3, { image: 'https://example.com/x.png' })
text.delete(1, 2)

const map = b.getMap('meta')
map.set('title', 'Plan ✓')
map.set('n', 42)
map.set('f', 1.5)
map.set('big', 2 ** 40)
map.set('neg', -7)
map.set('flag', true)
map.set('none', null)
map.set('nested', { list: [1, 'two', { three: [null, false] }], empty: {} })
map.set('bytes', new Uint8Array([0, 1, 255]))
map.set('sub', new Y.Map())
map.get('sub').set('k', 'v')
map.delete('n')

const array = c.getArray('items')
array.insert(0, [1, 'x', { y: [2] }])
array.push([new Y.Text('inner text'), new Y.Array(), new Y.Map()])
array.push([new Y.Doc({ guid: 'subdoc-guid' })])
array.delete(1, 1)

const fragment = a.getXmlFragment('prosemirror')
const paragraph = new Y.XmlElement('paragraph')
paragraph.setAttribute('align', 'left')
const xmlText = new Y.XmlText()
paragraph.insert(0, [xmlText])
fragment.insert(0, [paragraph])
xmlText.insert(0, 'rich ', { strong: true })
xmlText.insert(5, 'text')

// Every client learns from every other, then edits concurrently again.
for (const from of docs) {
  for (const to of docs) {
    if (from !== to) Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)))
  }
}
a.getText('content').insert(0, 'A')
b.getText('content').insert(2, 'B')
c.getText('content').delete(0, 3)

for (const doc of docs) {
  stateVectors.push(hex(Y.encodeStateVector(doc)))
  updates.push(hex(Y.encodeStateAsUpdate(doc)))
  for (const other of docs) {
    updates.push(hex(Y.encodeStateAsUpdate(doc, Y.encodeStateVector(other))))
  }
}
updates.push(hex(Y.mergeUpdates(updates.map((u) => Buffer.from(u, 'hex')))))

console.log(JSON.stringify({ updates, stateVectors }))
