/**
 * The GraphQL documents the client sends: the operations wandb-core 0.30 uses (see
 * ../shared/reference/wandb/PROTOCOL.md), each with only the fields we read.
 */

export const VIEWER = `query Viewer { viewer { id entity username } }`;

export const UPSERT_BUCKET = `mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, $groupName: String,
  $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String,
  $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!],
  $summaryMetrics: JSONString) {
  upsertBucket(input: { id: $id, name: $name, groupName: $groupName, modelName: $project, entityName: $entity,
    description: $description, displayName: $displayName, notes: $notes, config: $config, commit: $commit, host: $host,
    debug: $debug, jobProgram: $program, jobRepo: $repo, jobType: $jobType, state: $state, sweep: $sweep, tags: $tags,
    summaryMetrics: $summaryMetrics }) {
    bucket { id name displayName historyLineCount project { id name entity { id name } } }
    inserted
  }
}`;

export const RUN_RESUME_STATUS = `query RunResumeStatus($project: String, $entity: String, $name: String!) {
  model(name: $project, entityName: $entity) {
    id name entity { id name }
    bucket(name: $name, missingOk: true) {
      id name summaryMetrics displayName logLineCount historyLineCount eventsLineCount historyTail eventsTail config tags notes
      wandbConfig(keys: ["t"])
    }
  }
}`;

export const CREATE_RUN_FILES = `mutation CreateRunFiles($entity: String!, $project: String!, $run: String!, $files: [String!]!) {
  createRunFiles(input: { entityName: $entity, projectName: $project, runName: $run, files: $files }) {
    runID uploadHeaders files { name uploadUrl }
  }
}`;

export const CREATE_ARTIFACT = `mutation CreateArtifact($input: CreateArtifactInput!) {
  createArtifact(input: $input) {
    artifact { id state digest versionIndex artifactSequence { latestArtifact { id } } }
  }
}`;

export const CREATE_ARTIFACT_MANIFEST = `mutation CreateArtifactManifest($artifactID: ID!, $baseArtifactID: ID, $name: String!, $digest: String!,
  $entityName: String!, $projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) {
  createArtifactManifest(input: { artifactID: $artifactID, baseArtifactID: $baseArtifactID, name: $name, digest: $digest,
    entityName: $entityName, projectName: $projectName, runName: $runName, type: $manifestType }) {
    artifactManifest { id file { id uploadUrl @include(if: $includeUpload) uploadHeaders @include(if: $includeUpload) } }
  }
}`;

export const CREATE_ARTIFACT_FILES = `mutation CreateArtifactFiles($input: CreateArtifactFilesInput!) {
  createArtifactFiles(input: $input) {
    files { edges { node { storagePath uploadUrl uploadHeaders artifact { id } } } }
  }
}`;

export const COMMIT_ARTIFACT = `mutation CommitArtifact($artifactID: ID!) {
  commitArtifact(input: { artifactID: $artifactID }) { artifact { id digest versionIndex } }
}`;

export const ARTIFACT_MEMBERSHIP_BY_NAME = `query ArtifactMembershipByName($entity: String!, $project: String!, $name: String!) {
  project(name: $project, entityName: $entity) {
    artifactCollectionMembership(name: $name) {
      id versionIndex
      artifact { id digest state metadata versionIndex }
    }
  }
}`;

export const FETCH_ARTIFACT_MANIFEST = `query ArtifactManifest($artifact_id: ID!) {
  artifact(id: $artifact_id) { currentManifest { file { directUrl } } }
}`;

export const ARTIFACT_FILE_URLS = `query ArtifactFileURLs($id: ID!, $cursor: String, $perPage: Int) {
  artifact(id: $id) {
    files(after: $cursor, first: $perPage) {
      pageInfo { hasNextPage endCursor }
      edges { node { name directUrl } }
    }
  }
}`;
