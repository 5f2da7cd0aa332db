// CodeMirror 6 bound to a section's Y.Text (y-codemirror.next): markdown, remote cursors,
// an editable switch and the comment highlights.
import { Compartment, EditorState, RangeSet, StateEffect, StateField } from '@codemirror/state'
import { Decoration, EditorView, drawSelection, keymap, lineNumbers } from '@codemirror/view'
import { defaultKeymap, historyKeymap } from '@codemirror/commands'
import { Language, LanguageSupport, defaultHighlightStyle, defineLanguageFacet, syntaxHighlighting } from '@codemirror/language'
import { GFM, parser } from '@lezer/markdown'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

// Markdown (GitHub flavour) with highlighting. @codemirror/lang-markdown would also bring the
// HTML, CSS and JavaScript grammars for fenced code and inline HTML: a fifth of the bundle.
const markdownLanguage = new Language(defineLanguageFacet({ commentTokens: {} }), parser.configure(GFM), [], 'markdown')
const markdown = () => new LanguageSupport(markdownLanguage, [syntaxHighlighting(defaultHighlightStyle)])

const setHighlights = StateEffect.define()
const highlightMark = Decoration.mark({ class: 'cm-comment-highlight' })

// Highlights are recomputed from the comments' sticky anchors whenever the comments or the
// text change; mapping through changes in between keeps them on their characters.
const highlights = StateField.define({
  create: () => Decoration.none,
  update (value, tr) {
    for (const effect of tr.effects) if (effect.is(setHighlights)) return effect.value
    return value.map(tr.changes)
  },
  provide: (field) => EditorView.decorations.from(field)
})

export function createEditor (host, ytext, awareness, { label, onSelection }) {
  const editable = new Compartment()
  const view = new EditorView({
    parent: host,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        lineNumbers(),
        drawSelection(),
        EditorView.lineWrapping,
        markdown(),
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, ...historyKeymap]),
        yCollab(ytext, awareness),
        highlights,
        editable.of([EditorView.editable.of(false), EditorState.readOnly.of(true)]),
        EditorView.contentAttributes.of({ 'aria-label': label, 'aria-multiline': 'true', role: 'textbox' }),
        EditorView.updateListener.of((update) => {
          if (update.selectionSet || update.docChanged) {
            const { from, to } = update.state.selection.main
            onSelection(from, to)
          }
        })
      ]
    })
  })
  let isEditable = false
  return {
    view,
    get editable () { return isEditable },
    setEditable (value) {
      if (value === isEditable) return
      isEditable = value
      view.dispatch({
        effects: editable.reconfigure([EditorView.editable.of(value), EditorState.readOnly.of(!value)])
      })
    },
    /** `ranges`: [{from, to}] in UTF-16 units of the text. */
    setHighlights (ranges) {
      const length = view.state.doc.length
      const marks = ranges
        .map(({ from, to }) => [Math.max(0, Math.min(from, length)), Math.max(0, Math.min(to, length))])
        .filter(([from, to]) => to > from)
        .sort((a, b) => a[0] - b[0] || a[1] - b[1])
        .map(([from, to]) => highlightMark.range(from, to))
      view.dispatch({ effects: setHighlights.of(RangeSet.of(marks)) })
    },
    destroy () { view.destroy() }
  }
}
