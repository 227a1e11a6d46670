import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_NPY: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_NPZ: _ClassVar[OutputFormat]

class InputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_FORMAT_UNSPECIFIED: _ClassVar[InputFormat]
    INPUT_FORMAT_JSONL: _ClassVar[InputFormat]
    INPUT_FORMAT_NPY: _ClassVar[InputFormat]
    INPUT_FORMAT_NPZ: _ClassVar[InputFormat]
    INPUT_FORMAT_PNG_DIR: _ClassVar[InputFormat]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED_WITH_ERRORS: _ClassVar[JobState]
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_NPY: OutputFormat
OUTPUT_FORMAT_NPZ: OutputFormat
INPUT_FORMAT_UNSPECIFIED: InputFormat
INPUT_FORMAT_JSONL: InputFormat
INPUT_FORMAT_NPY: InputFormat
INPUT_FORMAT_NPZ: InputFormat
INPUT_FORMAT_PNG_DIR: InputFormat
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_SUCCEEDED_WITH_ERRORS: JobState

class GenerateImagesJob(_message.Message):
    __slots__ = ("model", "count", "seed", "label", "chunk_size", "format", "preview")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    seed: int
    label: int
    chunk_size: int
    format: OutputFormat
    preview: bool
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., label: _Optional[int] = ..., chunk_size: _Optional[int] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., preview: _Optional[bool] = ...) -> None: ...

class InputFileJob(_message.Message):
    __slots__ = ("model", "input_path", "upload_id", "input_format", "chunk_size", "top_k", "seed", "max_new_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_path: str
    upload_id: str
    input_format: InputFormat
    chunk_size: int
    top_k: int
    seed: int
    max_new_tokens: int
    def __init__(self, model: _Optional[str] = ..., input_path: _Optional[str] = ..., upload_id: _Optional[str] = ..., input_format: _Optional[_Union[InputFormat, str]] = ..., chunk_size: _Optional[int] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("generate_images", "input_file", "client_token")
    GENERATE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    INPUT_FILE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    generate_images: GenerateImagesJob
    input_file: InputFileJob
    client_token: str
    def __init__(self, generate_images: _Optional[_Union[GenerateImagesJob, _Mapping]] = ..., input_file: _Optional[_Union[InputFileJob, _Mapping]] = ..., client_token: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "done", "total", "request", "created_at", "updated_at", "error", "artifacts", "failed", "items_per_second", "eta_seconds", "chunks_done", "chunks_total", "result_dir", "model")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    done: int
    total: int
    request: SubmitJobRequest
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    failed: int
    items_per_second: float
    eta_seconds: float
    chunks_done: int
    chunks_total: int
    result_dir: str
    model: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., request: _Optional[_Union[SubmitJobRequest, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ..., failed: _Optional[int] = ..., items_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., chunks_done: _Optional[int] = ..., chunks_total: _Optional[int] = ..., result_dir: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UploadInputChunk(_message.Message):
    __slots__ = ("filename", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadInputResponse(_message.Message):
    __slots__ = ("upload_id", "size", "sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    size: int
    sha256: str
    def __init__(self, upload_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class FetchResultRequest(_message.Message):
    __slots__ = ("id", "path")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    size: int
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...
