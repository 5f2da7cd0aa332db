/** A refused request or a REST problem: `code` (close code / HTTP status), `title`, `detail`. */
export class CollabError extends Error {
  constructor (problem) {
    super(`${problem.title || 'error'}${problem.detail ? ': ' + problem.detail : ''}`)
    this.name = 'CollabError'
    this.code = problem.code ?? problem.status
    this.title = problem.title
    this.detail = problem.detail
    this.problem = problem
  }
}
