// The comments sidebar: threads with replies, resolve/reopen, a new comment on the selected
// text, @mentions, and the anchored highlights in the editor.
import { anchorFields, resolveAnchor } from '@collab/client'
import { h, fill, when, toast, colorOf, initials } from './dom.js'

export function commentsPanel (page) {
  const { outline } = page
  const comments = outline.comments
  const list = h('div', { class: 'threads', 'data-testid': 'comments', 'aria-live': 'polite' })
  const showResolved = h('input', { type: 'checkbox', id: 'show-resolved' })
  const selectionNote = h('p', { class: 'hint', id: 'selection-note' }, 'Select text in the editor to comment on it.')
  const content = h('textarea', { id: 'new-comment', rows: 3, maxlength: 10000, 'aria-describedby': 'selection-note', placeholder: 'Write a comment… (@ to mention)' })
  const suggestions = h('ul', { class: 'mentions', role: 'listbox', 'aria-label': 'People to mention', hidden: true })
  let selection = null
  let mentions = new Map() // name -> user id
  let scheduled = false

  const form = h('form', {
    class: 'new-comment',
    'aria-label': 'New comment',
    onsubmit: async (event) => {
      event.preventDefault()
      const text = content.value.trim()
      if (!text) return
      const fields = { content: text, mentions: mentionedIds(text) }
      const section = page.section
      if (section) {
        fields.section = section.id
        if (selection && selection.to > selection.from) Object.assign(fields, anchorFields(section.ytext, selection.from, selection.to))
      }
      try {
        await comments.create(fields)
        content.value = ''
        mentions = new Map()
      } catch (e) {
        toast(`Comment not saved: ${e.message}`, 'error')
      }
    }
  },
  h('label', { for: 'new-comment' }, 'Comment'), content, suggestions, selectionNote,
  h('button', { type: 'submit', class: 'primary', 'data-testid': 'comment-submit' }, 'Comment'))

  function mentionedIds (text) {
    return [...mentions.entries()].filter(([name]) => text.includes(`@${name}`)).map(([, id]) => id)
  }

  let asked = 0
  content.addEventListener('input', async () => {
    const match = content.value.slice(0, content.selectionStart).match(/@([\p{L}\p{N}_.-]*)$/u)
    if (!match) return (suggestions.hidden = true)
    const ticket = ++asked
    let people = []
    try {
      people = (await page.rest.people(page.documentId, { q: match[1], limit: 8 })).items
    } catch {}
    if (ticket !== asked) return // a newer keystroke asked again
    const found = people.filter((p) => p.id !== page.me.id)
    suggestions.hidden = found.length === 0
    fill(suggestions, found.map(({ id, name }) => h('li', { role: 'option' },
      h('button', {
        type: 'button',
        onclick: () => {
          const at = content.value.lastIndexOf(match[0], content.selectionStart)
          content.value = `${content.value.slice(0, at)}@${name} ${content.value.slice(at + match[0].length)}`
          mentions.set(name, id)
          suggestions.hidden = true
          content.focus()
        }
      }, name))))
  })

  function threadsOf () {
    const all = comments.list()
    const roots = all.filter((c) => !c.parentId && (showResolved.checked || !c.resolved))
    const replies = (id) => all.filter((c) => c.parentId === id)
    return roots.map((root) => ({ root, replies: replies(root.id) }))
  }

  function render () {
    const threads = threadsOf()
    fill(list, threads.length === 0 ? h('p', { class: 'muted' }, 'No open comments.') : threads.map(renderThread))
    scheduleHighlights()
  }

  function renderComment (c) {
    return h('div', { class: 'comment', 'data-testid': 'comment', 'data-comment-id': c.id },
      h('span', { class: 'avatar small', style: `background:${colorOf(c.author.id)}`, 'aria-hidden': 'true' }, initials(c.author.name)),
      h('div', {},
        h('p', { class: 'comment-meta' }, h('strong', {}, c.author.name || 'someone'), ' ', h('time', { datetime: c.createdAt }, when(c.createdAt)), c.editedAt ? ' (edited)' : ''),
        h('p', { class: 'comment-body' }, c.deleted ? h('em', {}, 'deleted') : c.content)))
  }

  function renderThread ({ root, replies }) {
    const replyBox = h('input', { 'aria-label': 'Reply', placeholder: 'Reply…', maxlength: 10000 })
    const anchor = root.anchor && root.anchor.orphaned ? h('p', { class: 'orphan' }, 'The commented text was deleted.') : root.quote ? h('blockquote', {}, root.quote) : null
    return h('article', { class: `thread${root.resolved ? ' resolved' : ''}`, 'aria-label': `Comment by ${root.author.name}` },
      root.section ? h('p', { class: 'muted' }, `in ${root.section}`) : null,
      anchor, renderComment(root), replies.map(renderComment),
      h('form', {
        class: 'reply',
        onsubmit: async (event) => {
          event.preventDefault()
          if (!replyBox.value.trim()) return
          try {
            await comments.create({ content: replyBox.value.trim(), parentId: root.id })
          } catch (e) {
            toast(`Reply not saved: ${e.message}`, 'error')
          }
        }
      }, replyBox, h('button', { type: 'submit' }, 'Reply')),
      h('button', {
        type: 'button',
        class: 'link',
        onclick: () => (root.resolved ? comments.reopen(root.id) : comments.resolve(root.id)).catch((e) => toast(e.message, 'error'))
      }, root.resolved ? 'Reopen' : 'Resolve'))
  }

  function scheduleHighlights () {
    if (scheduled) return
    scheduled = true
    requestAnimationFrame(() => {
      scheduled = false
      const section = page.section
      if (!section) return
      const ranges = []
      for (const c of comments.byId.values()) {
        if (c.parentId || c.resolved || c.deleted || c.section !== section.id) continue
        const where = resolveAnchor(section.ytext, c)
        if (where && !where.orphaned) ranges.push(where)
      }
      section.editor.setHighlights(ranges)
    })
  }

  comments.on('change', render)
  showResolved.addEventListener('change', render)
  outline.once('sync', () => comments.load().catch((e) => toast(`Comments not loaded: ${e.message}`, 'error')))

  return {
    element: h('div', { class: 'comments-panel' },
      h('h2', { class: 'visually-hidden' }, 'Comments'),
      form,
      h('p', {}, showResolved, h('label', { for: 'show-resolved' }, ' Show resolved')),
      list),
    selectionChanged (from, to) {
      selection = { from, to }
      const section = page.section
      fill(selectionNote, to > from && section
        ? `Commenting on: “${section.ytext.toString().slice(from, to).slice(0, 80)}”`
        : 'Select text in the editor to comment on it.')
    },
    sectionOpened (section) {
      section.ytext.observe(scheduleHighlights)
      scheduleHighlights()
    }
  }
}
