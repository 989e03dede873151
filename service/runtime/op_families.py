"""The op families a SavedModel's graph may use, and the reasons rtserve gives for the ops it refuses.

Data for runtime/screening.py. The screen is an allowlist: an op loads only if it is in one of ``ALLOWED``'s
families (or the operator names it in ``RTSERVE_ALLOWED_FILE_OPS``). ``REFUSED`` does not decide anything, it
only gives the reason a refusal names for the ops that reach outside the model; any other op outside the
families is refused as unknown, so an op that a new TensorFlow adds stays out until someone judges it.

Names are NodeDef.op names as TensorFlow 2.21 registers them (tests/unit/test_screening.py checks each one).
An op is in a family when it computes on tensors in memory: it opens no file, socket or process, and it cannot
run ops that the screen did not see (the functions that branch, loop and call ops run are library functions,
which the screen checks like the rest).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    reason: str  # ALLOWED: why its ops are safe to run; REFUSED: what the refusal message says they do
    ops: frozenset[str]


def _family(name: str, reason: str, ops: str) -> Family:
    return Family(name, reason, frozenset(ops.split()))


ALLOWED: tuple[Family, ...] = (
    _family(
        "math",
        "arithmetic, comparisons, reductions, linear algebra, FFTs and bit operations on tensors in memory",
        """
        Abs AccumulateNV2 Acos Acosh Add AddN AddV2 All Angle Any ApproximateEqual ArgMax ArgMin Asin Asinh Atan
        Atan2 Atanh BandedTriangularSolve BatchCholesky BatchCholeskyGrad BatchFFT BatchFFT2D BatchFFT3D BatchIFFT
        BatchIFFT2D BatchIFFT3D BatchMatMul BatchMatMulV2 BatchMatMulV3 BatchMatrixDeterminant BatchMatrixInverse
        BatchMatrixSolve BatchMatrixSolveLs BatchMatrixTriangularSolve BatchSelfAdjointEig BatchSelfAdjointEigV2
        BatchSvd BesselI0 BesselI0e BesselI1 BesselI1e BesselJ0 BesselJ1 BesselK0 BesselK0e BesselK1 BesselK1e
        BesselY0 BesselY1 Betainc Bincount BitwiseAnd BitwiseOr BitwiseXor Bucketize CSRSparseMatrixComponents
        CSRSparseMatrixToDense CSRSparseMatrixToSparseTensor Cast Ceil Cholesky CholeskyGrad ClipByValue Complex
        ComplexAbs Conj Cos Cosh Cross Cumprod Cumsum CumulativeLogsumexp Dawsn DenseBincount DenseToCSRSparseMatrix
        Digamma Div DivNoNan Eig Einsum Equal Erf Erfc Erfinv EuclideanNorm Exp Expint Expm1 FFT FFT2D FFT3D FFTND
        Floor FloorDiv FloorMod FresnelCos FresnelSin Greater GreaterEqual HistogramFixedWidth IFFT IFFT2D IFFT3D
        IFFTND IRFFT IRFFT2D IRFFT3D IRFFTND Igamma IgammaGradA Igammac Imag Inv InvGrad Invert IsFinite IsInf IsNan
        LeftShift Less LessEqual Lgamma LinSpace Log Log1p LogMatrixDeterminant LogicalAnd LogicalNot LogicalOr Lu
        MatMul MatrixDeterminant MatrixExponential MatrixInverse MatrixLogarithm MatrixSolve MatrixSolveLs
        MatrixSquareRoot MatrixTriangularSolve Max Maximum Mean Min Minimum Mod Mul MulNoNan Ndtri Neg NextAfter
        NotEqual Polygamma PopulationCount Pow Prod Qr QuantizeDownAndShrinkRange QuantizedAdd QuantizedMatMul
        QuantizedMul RFFT RFFT2D RFFT3D RFFTND RaggedBincount Range Real RealDiv Reciprocal ReciprocalGrad
        RequantizationRange RequantizationRangePerChannel Requantize RequantizePerChannel RightShift Rint Round
        Rsqrt RsqrtGrad SegmentMax SegmentMaxV2 SegmentMean SegmentMin SegmentMinV2 SegmentProd SegmentProdV2
        SegmentSum SegmentSumV2 Select SelectV2 SelfAdjointEig SelfAdjointEigV2 Sigmoid SigmoidGrad Sign Sin Sinh
        SobolSample SparseBincount SparseMatMul SparseMatrixAdd SparseMatrixMatMul SparseMatrixMul SparseMatrixNNZ
        SparseMatrixOrderingAMD SparseMatrixSoftmax SparseMatrixSoftmaxGrad SparseMatrixSparseCholesky
        SparseMatrixSparseMatMul SparseMatrixTranspose SparseMatrixZeros SparseSegmentMean SparseSegmentMeanGrad
        SparseSegmentMeanGradV2 SparseSegmentMeanWithNumSegments SparseSegmentSqrtN SparseSegmentSqrtNGrad
        SparseSegmentSqrtNGradV2 SparseSegmentSqrtNWithNumSegments SparseSegmentSum SparseSegmentSumGrad
        SparseSegmentSumGradV2 SparseSegmentSumWithNumSegments SparseTensorToCSRSparseMatrix Spence Sqrt SqrtGrad
        Square SquaredDifference Sub Sum Svd Tan Tanh TanhGrad TridiagonalMatMul TridiagonalSolve TruncateDiv
        TruncateMod UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentProd UnsortedSegmentSum Xdivy Xlog1py Xlogy
        Zeta
        """,
    ),
    _family(
        "array",
        "creating, reshaping, slicing, gathering and quantizing tensors in memory",
        """
        BatchMatrixBandPart BatchMatrixDiag BatchMatrixDiagPart BatchMatrixSetDiag BatchToSpace BatchToSpaceND
        Bitcast BroadcastArgs BroadcastGradientArgs BroadcastTo CheckNumerics CheckNumericsV2 Concat ConcatOffset
        ConcatV2 ConjugateTranspose Const DebugGradientIdentity DebugGradientRefIdentity DeepCopy DepthToSpace
        Dequantize Diag DiagPart DynamicPartition DynamicStitch EditDistance EnsureShape ExpandDims
        ExtractImagePatches ExtractVolumePatches FakeQuantWithMinMaxArgs FakeQuantWithMinMaxArgsGradient
        FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsGradient FakeQuantWithMinMaxVarsPerChannel
        FakeQuantWithMinMaxVarsPerChannelGradient Fill Fingerprint Gather GatherNd GatherV2 GuaranteeConst Identity
        IdentityN InplaceAdd InplaceSub InplaceUpdate InvertPermutation ListDiff LowerBound MatrixBandPart
        MatrixDiag MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixDiagV2 MatrixDiagV3 MatrixSetDiag
        MatrixSetDiagV2 MatrixSetDiagV3 MirrorPad MirrorPadGrad OneHot OnesLike Pack Pad PadV2 ParallelConcat
        ParallelDynamicStitch Placeholder PlaceholderV2 PlaceholderWithDefault PreventGradient QuantizeAndDequantize
        QuantizeAndDequantizeV2 QuantizeAndDequantizeV3 QuantizeAndDequantizeV4 QuantizeAndDequantizeV4Grad
        QuantizeV2 QuantizedConcat QuantizedInstanceNorm QuantizedReshape Rank RefIdentity Reshape
        ResourceStridedSliceAssign Reverse ReverseSequence ReverseV2 Roll ScatterNd ScatterNdNonAliasingAdd Shape
        ShapeN Size Slice Snapshot SpaceToBatch SpaceToBatchND SpaceToDepth Split SplitV Squeeze StopGradient
        StridedSlice StridedSliceAssign StridedSliceGrad TensorScatterAdd TensorScatterMax TensorScatterMin
        TensorScatterSub TensorScatterUpdate TensorStridedSliceUpdate Tile TileGrad Transpose Unique UniqueV2
        UniqueWithCounts UniqueWithCountsV2 Unpack UnravelIndex UpperBound Where ZerosLike
        """,
    ),
    _family(
        "nn",
        "layers' kernels: convolutions, pooling, normalization, activations, recurrent cells, CTC, sampling",
        """
        AllCandidateSampler ApproxTopK AvgPool AvgPool3D AvgPool3DGrad AvgPoolGrad BatchNormWithGlobalNormalization
        BatchNormWithGlobalNormalizationGrad BiasAdd BiasAddGrad BiasAddV1 BlockLSTM BlockLSTMGrad BlockLSTMGradV2
        BlockLSTMV2 CTCBeamSearchDecoder CTCGreedyDecoder CTCLoss CTCLossV2 ComputeAccidentalHits Conv Conv2D
        Conv2DBackpropFilter Conv2DBackpropFilterV2 Conv2DBackpropInput Conv2DBackpropInputV2 Conv3D
        Conv3DBackpropFilter Conv3DBackpropFilterV2 Conv3DBackpropInput Conv3DBackpropInputV2 CudnnRNN
        CudnnRNNBackprop CudnnRNNBackpropV2 CudnnRNNBackpropV3 CudnnRNNCanonicalToParams CudnnRNNCanonicalToParamsV2
        CudnnRNNParamsSize CudnnRNNParamsToCanonical CudnnRNNParamsToCanonicalV2 CudnnRNNV2 CudnnRNNV3
        DataFormatDimMap DataFormatVecPermute DepthwiseConv2dNative DepthwiseConv2dNativeBackpropFilter
        DepthwiseConv2dNativeBackpropInput Dilation2D Dilation2DBackpropFilter Dilation2DBackpropInput Elu EluGrad
        FixedUnigramCandidateSampler FractionalAvgPool FractionalAvgPoolGrad FractionalMaxPool FractionalMaxPoolGrad
        FusedBatchNorm FusedBatchNormGrad FusedBatchNormGradV2 FusedBatchNormGradV3 FusedBatchNormV2
        FusedBatchNormV3 FusedPadConv2D FusedResizeAndPadConv2D GRUBlockCell GRUBlockCellGrad InTopK InTopKV2
        IsotonicRegression KMC2ChainInitialization KmeansPlusPlusInitialization L2Loss LRN LRNGrad LSTMBlockCell
        LSTMBlockCellGrad LeakyRelu LeakyReluGrad LearnedUnigramCandidateSampler LogSoftmax
        LogUniformCandidateSampler MaxPool MaxPool3D MaxPool3DGrad MaxPool3DGradGrad MaxPoolGrad MaxPoolGradGrad
        MaxPoolGradGradV2 MaxPoolGradGradWithArgmax MaxPoolGradV2 MaxPoolGradWithArgmax MaxPoolV2 MaxPoolWithArgmax
        NearestNeighbors NthElement QuantizedAvgPool QuantizedBatchNormWithGlobalNormalization QuantizedBiasAdd
        QuantizedConv2D QuantizedConv2DAndRelu QuantizedConv2DAndReluAndRequantize QuantizedConv2DAndRequantize
        QuantizedConv2DPerChannel QuantizedConv2DWithBias QuantizedConv2DWithBiasAndRelu
        QuantizedConv2DWithBiasAndReluAndRequantize QuantizedConv2DWithBiasAndRequantize
        QuantizedConv2DWithBiasSignedSumAndReluAndRequantize QuantizedConv2DWithBiasSumAndRelu
        QuantizedConv2DWithBiasSumAndReluAndRequantize QuantizedDepthwiseConv2D QuantizedDepthwiseConv2DWithBias
        QuantizedDepthwiseConv2DWithBiasAndRelu QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize
        QuantizedMatMulWithBias QuantizedMatMulWithBiasAndDequantize QuantizedMatMulWithBiasAndRelu
        QuantizedMatMulWithBiasAndReluAndRequantize QuantizedMatMulWithBiasAndRequantize QuantizedMaxPool
        QuantizedRelu QuantizedRelu6 QuantizedReluX Relu Relu6 Relu6Grad ReluGrad Selu SeluGrad Softmax
        SoftmaxCrossEntropyWithLogits Softplus SoftplusGrad Softsign SoftsignGrad
        SparseSoftmaxCrossEntropyWithLogits ThreadUnsafeUnigramCandidateSampler TopK TopKV2 UniformCandidateSampler
        """,
    ),
    _family(
        "training",
        "optimizer updates of the model's own variables (TF1 graphs are saved with their training ops)",
        """
        ApplyAdaMax ApplyAdadelta ApplyAdagrad ApplyAdagradDA ApplyAdagradV2 ApplyAdam ApplyAddSign
        ApplyCenteredRMSProp ApplyFtrl ApplyFtrlV2 ApplyGradientDescent ApplyMomentum ApplyPowerSign
        ApplyProximalAdagrad ApplyProximalGradientDescent ApplyRMSProp ResourceApplyAdaMax ResourceApplyAdadelta
        ResourceApplyAdagrad ResourceApplyAdagradDA ResourceApplyAdagradV2 ResourceApplyAdam
        ResourceApplyAdamWithAmsgrad ResourceApplyAddSign ResourceApplyCenteredRMSProp ResourceApplyFtrl
        ResourceApplyFtrlV2 ResourceApplyGradientDescent ResourceApplyKerasMomentum ResourceApplyMomentum
        ResourceApplyPowerSign ResourceApplyProximalAdagrad ResourceApplyProximalGradientDescent
        ResourceApplyRMSProp ResourceSparseApplyAdadelta ResourceSparseApplyAdagrad ResourceSparseApplyAdagradDA
        ResourceSparseApplyAdagradV2 ResourceSparseApplyCenteredRMSProp ResourceSparseApplyFtrl
        ResourceSparseApplyFtrlV2 ResourceSparseApplyKerasMomentum ResourceSparseApplyMomentum
        ResourceSparseApplyProximalAdagrad ResourceSparseApplyProximalGradientDescent ResourceSparseApplyRMSProp
        SparseApplyAdadelta SparseApplyAdagrad SparseApplyAdagradDA SparseApplyAdagradV2 SparseApplyCenteredRMSProp
        SparseApplyFtrl SparseApplyFtrlV2 SparseApplyMomentum SparseApplyProximalAdagrad
        SparseApplyProximalGradientDescent SparseApplyRMSProp
        """,
    ),
    _family(
        "control flow",
        "branches, loops and calls of the graph's own library functions (screened too)",
        """
        Case ControlTrigger DeviceIndex Enter Exit FakeParam For If LoopCond Merge NextIteration NoOp
        PartitionedCall RefEnter RefExit RefMerge RefNextIteration RefSelect RefSwitch Stack StackClose StackCloseV2
        StackPop StackPopV2 StackPush StackPushV2 StackV2 StatefulPartitionedCall StatelessCase StatelessIf
        StatelessWhile Switch SymbolicGradient ToBool While
        """,
    ),
    _family(
        "variables",
        "the model's own variables, resource or TF1 reference variables",
        """
        Assign AssignAdd AssignAddVariableOp AssignSub AssignSubVariableOp AssignVariableOp CountUpTo
        DestroyResourceOp DestroyTemporaryVariable DisableCopyOnRead IsVariableInitialized ReadVariableOp
        ResourceCountUpTo ResourceGather ResourceGatherNd ResourceScatterAdd ResourceScatterDiv ResourceScatterMax
        ResourceScatterMin ResourceScatterMul ResourceScatterNdAdd ResourceScatterNdMax ResourceScatterNdMin
        ResourceScatterNdSub ResourceScatterNdUpdate ResourceScatterSub ResourceScatterUpdate ScatterAdd ScatterDiv
        ScatterMax ScatterMin ScatterMul ScatterNdAdd ScatterNdMax ScatterNdMin ScatterNdSub ScatterNdUpdate
        ScatterSub ScatterUpdate TemporaryVariable VarHandleOp VarIsInitializedOp Variable VariableShape VariableV2
        """,
    ),
    _family(
        "lookup tables",
        "hash tables filled from tensors in the graph (a vocabulary file is refused, see below)",
        """
        AnonymousHashTable AnonymousMutableDenseHashTable AnonymousMutableHashTable
        AnonymousMutableHashTableOfTensors HashTable HashTableV2 InitializeTable InitializeTableV2 LookupTableExport
        LookupTableExportV2 LookupTableFind LookupTableFindV2 LookupTableImport LookupTableImportV2
        LookupTableInsert LookupTableInsertV2 LookupTableRemoveV2 LookupTableSize LookupTableSizeV2
        MutableDenseHashTable MutableDenseHashTableV2 MutableHashTable MutableHashTableOfTensors
        MutableHashTableOfTensorsV2 MutableHashTableV2
        """,
    ),
    _family(
        "strings",
        "string formatting, splitting, regexes (RE2), hashing, unicode, checkpoint file names",
        """
        AsString DecodeBase64 EncodeBase64 ReduceJoin RegexFullMatch RegexReplace ShardedFilename ShardedFilespec
        StaticRegexFullMatch StaticRegexReplace StringFormat StringJoin StringLength StringLower StringNGrams
        StringSplit StringSplitV2 StringStrip StringToHashBucket StringToHashBucketFast StringToHashBucketStrong
        StringUpper Substr UnicodeDecode UnicodeDecodeWithOffsets UnicodeEncode UnicodeScript UnicodeTranscode
        UnsortedSegmentJoin
        """,
    ),
    _family(
        "parsing",
        "decoding tf.Example, CSV, JSON, raw bytes, compressed strings and tensors held in tensors",
        """
        DecodeCSV DecodeCompressed DecodeJSONExample DecodePaddedRaw DecodeProtoV2 DecodeRaw DeserializeManySparse
        DeserializeSparse EncodeProto ParseExample ParseExampleV2 ParseSequenceExample ParseSequenceExampleV2
        ParseSingleExample ParseSingleSequenceExample ParseTensor SerializeManySparse SerializeSparse
        SerializeTensor StringToNumber
        """,
    ),
    _family(
        "images and audio",
        "decoding, encoding, resizing and transforming images and audio held in tensors",
        """
        AdjustContrast AdjustContrastv2 AdjustHue AdjustSaturation AudioSpectrogram CombinedNonMaxSuppression
        CropAndResize CropAndResizeGradBoxes CropAndResizeGradImage DecodeAndCropJpeg DecodeBmp DecodeGif
        DecodeImage DecodeJpeg DecodeJxl DecodePng DecodeWav DecodeWebP DrawBoundingBoxes DrawBoundingBoxesV2
        EncodeJpeg EncodeJpegVariableQuality EncodePng EncodeWav ExtractGlimpse ExtractGlimpseV2 ExtractJpegShape
        GenerateBoundingBoxProposals HSVToRGB ImageProjectiveTransformV2 ImageProjectiveTransformV3 Mfcc
        NonMaxSuppression NonMaxSuppressionV2 NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5
        NonMaxSuppressionWithOverlaps QuantizedResizeBilinear RGBToHSV RandomCrop ResizeArea ResizeBicubic
        ResizeBicubicGrad ResizeBilinear ResizeBilinearGrad ResizeNearestNeighbor ResizeNearestNeighborGrad
        SampleDistortedBoundingBox SampleDistortedBoundingBoxV2 ScaleAndTranslate ScaleAndTranslateGrad
        StatelessSampleDistortedBoundingBox
        """,
    ),
    _family(
        "random",
        "random numbers, stateful and stateless",
        """
        Multinomial NonDeterministicInts ParameterizedTruncatedNormal RandomGamma RandomGammaGrad RandomIndexShuffle
        RandomPoisson RandomPoissonV2 RandomShuffle RandomStandardNormal RandomUniform RandomUniformInt
        RngReadAndSkip RngSkip StatefulRandomBinomial StatefulStandardNormal StatefulStandardNormalV2
        StatefulTruncatedNormal StatefulUniform StatefulUniformFullInt StatefulUniformInt StatelessMultinomial
        StatelessParameterizedTruncatedNormal StatelessRandomBinomial StatelessRandomGammaV2 StatelessRandomGammaV3
        StatelessRandomGetAlg StatelessRandomGetKeyCounter StatelessRandomGetKeyCounterAlg StatelessRandomNormal
        StatelessRandomNormalV2 StatelessRandomPoisson StatelessRandomUniform StatelessRandomUniformFullInt
        StatelessRandomUniformFullIntV2 StatelessRandomUniformInt StatelessRandomUniformIntV2
        StatelessRandomUniformV2 StatelessShuffle StatelessTruncatedNormal StatelessTruncatedNormalV2
        TruncatedNormal
        """,
    ),
    _family(
        "sparse and ragged",
        "sparse and ragged tensors, counts and set operations in memory",
        """
        DenseCountSparseOutput DenseToDenseSetOperation DenseToSparseSetOperation RaggedCountSparseOutput
        RaggedCross RaggedFillEmptyRows RaggedFillEmptyRowsGrad RaggedGather RaggedRange RaggedTensorFromVariant
        RaggedTensorToSparse RaggedTensorToTensor RaggedTensorToVariant RaggedTensorToVariantGradient SetSize
        SparseAdd SparseAddGrad SparseConcat SparseCountSparseOutput SparseCross SparseCrossHashed SparseCrossV2
        SparseDenseCwiseAdd SparseDenseCwiseDiv SparseDenseCwiseMul SparseFillEmptyRows SparseFillEmptyRowsGrad
        SparseReduceMax SparseReduceMaxSparse SparseReduceSum SparseReduceSumSparse SparseReorder SparseReshape
        SparseSlice SparseSliceGrad SparseSoftmax SparseSparseMaximum SparseSparseMinimum SparseSplit
        SparseTensorDenseAdd SparseTensorDenseMatMul SparseToDense SparseToSparseSetOperation
        """,
    ),
    _family(
        "tensor containers",
        "TensorList, TensorArray, TensorMap, optionals and composite tensors: values in memory",
        """
        CompositeTensorVariantFromComponents CompositeTensorVariantToComponents EmptyTensorList EmptyTensorMap
        OptionalFromValue OptionalGetValue OptionalHasValue OptionalNone TensorArray TensorArrayClose
        TensorArrayCloseV2 TensorArrayCloseV3 TensorArrayConcat TensorArrayConcatV2 TensorArrayConcatV3
        TensorArrayGather TensorArrayGatherV2 TensorArrayGatherV3 TensorArrayGrad TensorArrayGradV2
        TensorArrayGradV3 TensorArrayGradWithShape TensorArrayPack TensorArrayRead TensorArrayReadV2
        TensorArrayReadV3 TensorArrayScatter TensorArrayScatterV2 TensorArrayScatterV3 TensorArraySize
        TensorArraySizeV2 TensorArraySizeV3 TensorArraySplit TensorArraySplitV2 TensorArraySplitV3 TensorArrayUnpack
        TensorArrayV2 TensorArrayV3 TensorArrayWrite TensorArrayWriteV2 TensorArrayWriteV3 TensorListConcat
        TensorListConcatLists TensorListConcatV2 TensorListElementShape TensorListFromTensor TensorListGather
        TensorListGetItem TensorListLength TensorListPopBack TensorListPushBack TensorListPushBackBatch
        TensorListReserve TensorListResize TensorListScatter TensorListScatterIntoExistingList TensorListScatterV2
        TensorListSetItem TensorListSplit TensorListStack TensorMapErase TensorMapHasKey TensorMapInsert
        TensorMapLookup TensorMapSize TensorMapStackKeys
        """,
    ),
    _family(
        "logging",
        "asserts, prints and summaries into tensors (PrintV2 to a file is refused, see below)",
        """
        Assert AudioSummary AudioSummaryV2 HistogramSummary ImageSummary MergeSummary Print PrintV2 ScalarSummary
        TensorSummary TensorSummaryV2 Timestamp
        """,
    ),
    _family(
        "debugging",
        "tfdbg ops that pass a tensor through or summarize it (with debug URLs they are refused, see below)",
        """
        DebugIdentity DebugIdentityV2 DebugIdentityV3 DebugNanCount DebugNumericSummary DebugNumericSummaryV2
        """,
    ),
)

# The model's own saver reads and writes its variables with these (runtime/screening.py allows them there);
# anywhere else they read or write any path.
CHECKPOINTS = _family(
    "checkpoints",
    "reads or writes checkpoint files outside the model's saver",
    "Save SaveSlices SaveV2 Restore RestoreSlice RestoreV2 MergeV2Checkpoints",
)

REFUSED: tuple[Family, ...] = (
    # The escape of issue 9: a tf.data graph carried as a string, rebuilt and run by DatasetFromGraph. Whatever
    # such a blob or handle holds never passes the screen, so the ops that turn one into a graph, dataset,
    # iterator or tensor are refused, and so are those that make one.
    _family(
        "from a tensor",
        "rebuilds a graph, dataset, iterator or tensor from a string the screen cannot see into",
        """
        DatasetFromGraph DatasetToGraph DatasetToGraphV2 DeserializeIterator SerializeIterator
        IteratorFromStringHandle IteratorFromStringHandleV2 IteratorToStringHandle
        MultiDeviceIteratorFromStringHandle MultiDeviceIteratorToStringHandle
        GetSessionHandle GetSessionHandleV2 GetSessionTensor DeleteSessionTensor
        """,
    ),
    # Compiled modules and custom calls run code that is not made of screened ops.
    _family(
        "compiled code",
        "runs a compiled module or native code that is not made of screened ops",
        """
        XlaCallModule XlaLaunch XlaLaunchV2 _XlaCompile _XlaRun XlaCustomCall XlaCustomCallV2 MlirPassthroughOp
        TPUCompile _TPUCompileMlir TPUExecute TPUExecuteAndUpdateVariables TPUPartitionedCall _TPUReplicate
        XlaHostCompute _XlaHostComputeMlir
        """,
    ),
    _family(
        "network",
        "talks to other tasks, devices or servers over the network",
        """
        RemoteCall RpcServer RpcServerStart RpcServerRegister RpcClient RpcCall RpcCheckStatus RpcGetValue
        DeleteRpcFutureResource Send Recv _Send _Recv _HostSend _HostRecv
        CollectiveAllToAllV2 CollectiveAllToAllV3 CollectiveAssignGroupV2 CollectiveBcastRecv CollectiveBcastRecvV2
        CollectiveBcastSend CollectiveBcastSendV2 CollectiveGather CollectiveGatherV2
        CollectiveInitializeCommunicator CollectiveReduce CollectiveReduceScatterV2 CollectiveReduceV2
        CollectiveReduceV3 NcclAllReduce NcclBroadcast NcclReduce _NcclBroadcastRecv _NcclBroadcastSend
        _NcclReduceRecv _NcclReduceSend CollectivePermute AllToAll CrossReplicaSum XlaAllReduce XlaReduceScatter
        XlaSend XlaRecv XlaSendToHost XlaRecvFromHost _XlaSendFromHost _XlaSendFromHostV2 _XlaRecvAtHost
        _XlaRecvAtHostV2 DTensorAllGather DTensorAllReduce DTensorAllScatter DTensorAllToAll DTensorReduceScatter
        CopyToMesh Relayout WorkerHeartbeat ConfigureDistributedTPU ShutdownDistributedTPU
        """,
    ),
    # Paths are tensors, so nothing short of running the graph says which file: refuse the op.
    _family(
        "files",
        "reads, writes or lists files",
        "ReadFile WriteFile MatchingFiles FileSystemSetConfiguration RecordInput DumpTensor CalibrationStatisticsSaver",
    ),
    _family("memory-mapped file", "maps a file into memory", "ImmutableConst"),
    _family(
        "TF1 readers",
        "reads files (TF1 reader)",
        """
        WholeFileReader WholeFileReaderV2 TextLineReader TextLineReaderV2 TFRecordReader TFRecordReaderV2
        FixedLengthRecordReader FixedLengthRecordReaderV2 LMDBReader
        """,
    ),
    # tf.data sources and sinks backed by files, databases, caches and snapshots on disk, or a tf.data service.
    _family(
        "tf.data files and network",
        "reads or writes files or the network (tf.data)",
        """
        TFRecordDataset TFRecordDatasetV2 FixedLengthRecordDataset FixedLengthRecordDatasetV2 TextLineDataset
        CSVDataset CSVDatasetV2 ExperimentalCSVDataset LMDBDataset ExperimentalLMDBDataset SqlDataset
        ExperimentalSqlDataset MatchingFilesDataset ExperimentalMatchingFilesDataset CacheDataset CacheDatasetV2
        SnapshotDataset SnapshotDatasetV2 SnapshotDatasetReader SnapshotNestedDatasetReader SnapshotChunkDataset
        ListSnapshotChunksDataset LoadDataset SaveDataset SaveDatasetV2 DistributedSave DatasetToTFRecord
        ExperimentalDatasetToTFRecord DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3
        DataServiceDatasetV4 RegisterDataset RegisterDatasetV2 InitializeTableFromDataset
        """,
    ),
    # Summary writers create event files or SQLite databases under a directory given as a tensor.
    _family(
        "summary writers",
        "writes summary files",
        "CreateSummaryFileWriter CreateSummaryDbWriter StatsAggregatorSetSummaryWriter",
    ),
    # A model with a vocabulary asset file (feature columns, tf.Transform) uses InitializeTableFromTextFileV2:
    # allow it by name for such a model.
    _family(
        "vocabulary and checkpoint readers",
        "reads vocabulary or checkpoint files",
        "InitializeTableFromTextFile InitializeTableFromTextFileV2 GenerateVocabRemapping LoadAndRemapMatrix",
    ),
    CHECKPOINTS,
    # Python callbacks cannot be serialized (they fail at run time), but a graph that names them is not a model
    # built for serving.
    _family("Python", "runs Python code", "PyFunc PyFuncStateless EagerPyFunc"),
    _family("abort", "ends the process", "Abort"),
    # Empty(init=False) hands out a buffer as the allocator left it: bytes of other requests' tensors.
    _family("uninitialized memory", "returns uninitialized memory", "Empty _ParallelConcatStart"),
)

# What a refusal says of an op that is in no family and has no reason above.
UNKNOWN_REASON = "not in an op family that rtserve allows"


def registered_ops() -> frozenset[str]:
    """Every op this process's TensorFlow registers, hidden ones (``_Send``) included."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    ops = op_def_pb2.OpList()
    ops.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    return frozenset(op.name for op in ops.op)
