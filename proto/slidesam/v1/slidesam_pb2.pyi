from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WindowMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_MODE_UNSPECIFIED: _ClassVar[WindowMode]
    WINDOW_MODE_MULTI: _ClassVar[WindowMode]
    WINDOW_MODE_SINGLE: _ClassVar[WindowMode]

class PromptStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROMPT_STRATEGY_UNSPECIFIED: _ClassVar[PromptStrategy]
    PROMPT_STRATEGY_PLAIN: _ClassVar[PromptStrategy]
    PROMPT_STRATEGY_CONSISTENT: _ClassVar[PromptStrategy]
WINDOW_MODE_UNSPECIFIED: WindowMode
WINDOW_MODE_MULTI: WindowMode
WINDOW_MODE_SINGLE: WindowMode
PROMPT_STRATEGY_UNSPECIFIED: PromptStrategy
PROMPT_STRATEGY_PLAIN: PromptStrategy
PROMPT_STRATEGY_CONSISTENT: PromptStrategy

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "architecture", "input_size", "checkpoint_sha256", "device", "loaded", "is_default", "available", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    input_size: int
    checkpoint_sha256: str
    device: str
    loaded: bool
    is_default: bool
    available: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., input_size: _Optional[int] = ..., checkpoint_sha256: _Optional[str] = ..., device: _Optional[str] = ..., loaded: _Optional[bool] = ..., is_default: _Optional[bool] = ..., available: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class UploadImageRequest(_message.Message):
    __slots__ = ("data", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadImageResponse(_message.Message):
    __slots__ = ("sha256", "width", "height", "already_present")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    width: int
    height: int
    already_present: bool
    def __init__(self, sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class UploadedImageRef(_message.Message):
    __slots__ = ("sha256", "origin_x", "origin_y", "downsample", "mpp", "objective_power")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_X_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_Y_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    MPP_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_POWER_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    origin_x: float
    origin_y: float
    downsample: float
    mpp: float
    objective_power: float
    def __init__(self, sha256: _Optional[str] = ..., origin_x: _Optional[float] = ..., origin_y: _Optional[float] = ..., downsample: _Optional[float] = ..., mpp: _Optional[float] = ..., objective_power: _Optional[float] = ...) -> None: ...

class ImageSource(_message.Message):
    __slots__ = ("slide_id", "uploaded")
    SLIDE_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    slide_id: str
    uploaded: UploadedImageRef
    def __init__(self, slide_id: _Optional[str] = ..., uploaded: _Optional[_Union[UploadedImageRef, _Mapping]] = ...) -> None: ...

class Rect(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("mpp", "magnification", "downsample")
    MPP_FIELD_NUMBER: _ClassVar[int]
    MAGNIFICATION_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    mpp: float
    magnification: float
    downsample: float
    def __init__(self, mpp: _Optional[float] = ..., magnification: _Optional[float] = ..., downsample: _Optional[float] = ...) -> None: ...

class FieldOfView(_message.Message):
    __slots__ = ("image", "region", "resolution", "windows", "align_to_grid")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    ALIGN_TO_GRID_FIELD_NUMBER: _ClassVar[int]
    image: ImageSource
    region: Rect
    resolution: Resolution
    windows: WindowMode
    align_to_grid: bool
    def __init__(self, image: _Optional[_Union[ImageSource, _Mapping]] = ..., region: _Optional[_Union[Rect, _Mapping]] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ..., windows: _Optional[_Union[WindowMode, str]] = ..., align_to_grid: _Optional[bool] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Click(_message.Message):
    __slots__ = ("x", "y", "positive")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    positive: bool
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., positive: _Optional[bool] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class PolygonOptions(_message.Message):
    __slots__ = ("simplify_tolerance_um", "simplify_tolerance_px", "max_vertices", "min_area_um2", "min_area_px")
    SIMPLIFY_TOLERANCE_UM_FIELD_NUMBER: _ClassVar[int]
    SIMPLIFY_TOLERANCE_PX_FIELD_NUMBER: _ClassVar[int]
    MAX_VERTICES_FIELD_NUMBER: _ClassVar[int]
    MIN_AREA_UM2_FIELD_NUMBER: _ClassVar[int]
    MIN_AREA_PX_FIELD_NUMBER: _ClassVar[int]
    simplify_tolerance_um: float
    simplify_tolerance_px: float
    max_vertices: int
    min_area_um2: float
    min_area_px: float
    def __init__(self, simplify_tolerance_um: _Optional[float] = ..., simplify_tolerance_px: _Optional[float] = ..., max_vertices: _Optional[int] = ..., min_area_um2: _Optional[float] = ..., min_area_px: _Optional[float] = ...) -> None: ...

class Ring(_message.Message):
    __slots__ = ("xy",)
    XY_FIELD_NUMBER: _ClassVar[int]
    xy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, xy: _Optional[_Iterable[float]] = ...) -> None: ...

class Polygon(_message.Message):
    __slots__ = ("exterior", "holes")
    EXTERIOR_FIELD_NUMBER: _ClassVar[int]
    HOLES_FIELD_NUMBER: _ClassVar[int]
    exterior: Ring
    holes: _containers.RepeatedCompositeFieldContainer[Ring]
    def __init__(self, exterior: _Optional[_Union[Ring, _Mapping]] = ..., holes: _Optional[_Iterable[_Union[Ring, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("read_ms", "encode_ms", "decode_ms", "postprocess_ms", "total_ms", "cache_hit", "queue_ms", "windows_encoded", "windows_from_store")
    READ_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_ENCODED_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FROM_STORE_FIELD_NUMBER: _ClassVar[int]
    read_ms: float
    encode_ms: float
    decode_ms: float
    postprocess_ms: float
    total_ms: float
    cache_hit: bool
    queue_ms: float
    windows_encoded: int
    windows_from_store: int
    def __init__(self, read_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., cache_hit: _Optional[bool] = ..., queue_ms: _Optional[float] = ..., windows_encoded: _Optional[int] = ..., windows_from_store: _Optional[int] = ...) -> None: ...

class ModelResolution(_message.Message):
    __slots__ = ("requested_downsample", "requested_mpp", "encoder_downsample", "encoder_mpp", "downsampled", "windows", "windows_decoded", "coarse_downsample")
    REQUESTED_DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MPP_FIELD_NUMBER: _ClassVar[int]
    ENCODER_DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MPP_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLED_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_DECODED_FIELD_NUMBER: _ClassVar[int]
    COARSE_DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    requested_downsample: float
    requested_mpp: float
    encoder_downsample: float
    encoder_mpp: float
    downsampled: bool
    windows: int
    windows_decoded: int
    coarse_downsample: float
    def __init__(self, requested_downsample: _Optional[float] = ..., requested_mpp: _Optional[float] = ..., encoder_downsample: _Optional[float] = ..., encoder_mpp: _Optional[float] = ..., downsampled: _Optional[bool] = ..., windows: _Optional[int] = ..., windows_decoded: _Optional[int] = ..., coarse_downsample: _Optional[float] = ...) -> None: ...

class SegmentationResult(_message.Message):
    __slots__ = ("object_id", "polygons", "score", "area_px", "area_um2", "mpp_known", "model_id", "timings", "clicks", "box", "step", "can_undo", "can_redo", "region", "downsample", "strategy", "resolution", "outline")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    AREA_PX_FIELD_NUMBER: _ClassVar[int]
    AREA_UM2_FIELD_NUMBER: _ClassVar[int]
    MPP_KNOWN_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CAN_UNDO_FIELD_NUMBER: _ClassVar[int]
    CAN_REDO_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    polygons: _containers.RepeatedCompositeFieldContainer[Polygon]
    score: float
    area_px: float
    area_um2: float
    mpp_known: bool
    model_id: str
    timings: Timings
    clicks: _containers.RepeatedCompositeFieldContainer[Click]
    box: Box
    step: int
    can_undo: bool
    can_redo: bool
    region: Rect
    downsample: float
    strategy: PromptStrategy
    resolution: ModelResolution
    outline: _containers.RepeatedCompositeFieldContainer[Polygon]
    def __init__(self, object_id: _Optional[str] = ..., polygons: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ..., score: _Optional[float] = ..., area_px: _Optional[float] = ..., area_um2: _Optional[float] = ..., mpp_known: _Optional[bool] = ..., model_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., clicks: _Optional[_Iterable[_Union[Click, _Mapping]]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., step: _Optional[int] = ..., can_undo: _Optional[bool] = ..., can_redo: _Optional[bool] = ..., region: _Optional[_Union[Rect, _Mapping]] = ..., downsample: _Optional[float] = ..., strategy: _Optional[_Union[PromptStrategy, str]] = ..., resolution: _Optional[_Union[ModelResolution, _Mapping]] = ..., outline: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ...) -> None: ...

class OpenObject(_message.Message):
    __slots__ = ("field_of_view", "model", "polygon_options", "object_id", "strategy")
    FIELD_OF_VIEW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLYGON_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    field_of_view: FieldOfView
    model: str
    polygon_options: PolygonOptions
    object_id: str
    strategy: PromptStrategy
    def __init__(self, field_of_view: _Optional[_Union[FieldOfView, _Mapping]] = ..., model: _Optional[str] = ..., polygon_options: _Optional[_Union[PolygonOptions, _Mapping]] = ..., object_id: _Optional[str] = ..., strategy: _Optional[_Union[PromptStrategy, str]] = ...) -> None: ...

class AddClicks(_message.Message):
    __slots__ = ("clicks",)
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    clicks: _containers.RepeatedCompositeFieldContainer[Click]
    def __init__(self, clicks: _Optional[_Iterable[_Union[Click, _Mapping]]] = ...) -> None: ...

class SetBox(_message.Message):
    __slots__ = ("box",)
    BOX_FIELD_NUMBER: _ClassVar[int]
    box: Box
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class SetOutline(_message.Message):
    __slots__ = ("polygons",)
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    polygons: _containers.RepeatedCompositeFieldContainer[Polygon]
    def __init__(self, polygons: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ...) -> None: ...

class Undo(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Redo(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Reset(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Finish(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InteractRequest(_message.Message):
    __slots__ = ("request_id", "open", "clicks", "box", "undo", "redo", "reset", "finish", "outline")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    REDO_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    open: OpenObject
    clicks: AddClicks
    box: SetBox
    undo: Undo
    redo: Redo
    reset: Reset
    finish: Finish
    outline: SetOutline
    def __init__(self, request_id: _Optional[int] = ..., open: _Optional[_Union[OpenObject, _Mapping]] = ..., clicks: _Optional[_Union[AddClicks, _Mapping]] = ..., box: _Optional[_Union[SetBox, _Mapping]] = ..., undo: _Optional[_Union[Undo, _Mapping]] = ..., redo: _Optional[_Union[Redo, _Mapping]] = ..., reset: _Optional[_Union[Reset, _Mapping]] = ..., finish: _Optional[_Union[Finish, _Mapping]] = ..., outline: _Optional[_Union[SetOutline, _Mapping]] = ...) -> None: ...

class StepError(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class InteractResponse(_message.Message):
    __slots__ = ("request_id", "result", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    result: SegmentationResult
    error: StepError
    def __init__(self, request_id: _Optional[int] = ..., result: _Optional[_Union[SegmentationResult, _Mapping]] = ..., error: _Optional[_Union[StepError, _Mapping]] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("field_of_view", "model", "clicks", "box", "polygon_options", "strategy", "outline")
    FIELD_OF_VIEW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    POLYGON_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    field_of_view: FieldOfView
    model: str
    clicks: _containers.RepeatedCompositeFieldContainer[Click]
    box: Box
    polygon_options: PolygonOptions
    strategy: PromptStrategy
    outline: _containers.RepeatedCompositeFieldContainer[Polygon]
    def __init__(self, field_of_view: _Optional[_Union[FieldOfView, _Mapping]] = ..., model: _Optional[str] = ..., clicks: _Optional[_Iterable[_Union[Click, _Mapping]]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., polygon_options: _Optional[_Union[PolygonOptions, _Mapping]] = ..., strategy: _Optional[_Union[PromptStrategy, str]] = ..., outline: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: SegmentationResult
    def __init__(self, result: _Optional[_Union[SegmentationResult, _Mapping]] = ...) -> None: ...
